"""The core is device-agnostic: no vendor import and no torch.cuda anywhere in halinfer/core."""
from __future__ import annotations

import re
from pathlib import Path

import halinfer.core

CORE = Path(halinfer.core.__file__).parent
VENDOR_IMPORT = re.compile(r"^\s*(from|import)\s+(torch_npu|torch_mlu|torch_mlu_ops|mcoplib|flash_attn|triton)\b", re.M)


def test_core_never_names_torch_cuda_or_imports_a_vendor_library():
    bad = []
    for f in sorted(CORE.rglob("*.py")):
        text = f.read_text()
        if "torch.cuda" in text or VENDOR_IMPORT.search(text) or re.search(r"import halinfer\.plugins|from halinfer\.plugins|from \.\.plugins", text):
            bad.append(str(f.relative_to(CORE)))
    assert not bad, f"device-specific code in the core: {bad}"
