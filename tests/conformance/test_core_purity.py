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


def test_no_plugin_imports_another_plugin():
    plugins = CORE.parent / "plugins"
    bad = []
    for pdir in sorted(p for p in plugins.iterdir() if p.is_dir() and not p.name.startswith("_")):
        others = [o.name for o in plugins.iterdir() if o.is_dir() and o.name != pdir.name]
        for f in sorted(pdir.rglob("*.py")):
            text = f.read_text()
            bad += [f"{f.relative_to(plugins)} -> {o}" for o in others
                    if re.search(rf"(from|import)\s+halinfer\.plugins\.{o}\b|from\s+\.\.{o}\b", text)]
    assert not bad, f"plugins importing other plugins (share through a neutral package instead): {bad}"
