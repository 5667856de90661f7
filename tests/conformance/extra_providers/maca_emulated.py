"""The MACA plugin on an emulated MetaX stack (tests/vendors/emulation/maca), CPU tensors.

mcoplib and flash_attn ops are emulated; the CUDA plugin's Triton kernels the
plugin reuses run under Triton's interpreter (float16 only: the interpreter's
bfloat16 tl.dot is wrong).

maca-emu        eager.
maca-emu-graph  every call captured into an emulated CUDA graph and replayed
                (Triton launches taped like any kernel launch).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..providers import Provider, from_backend

_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

GRAPH_SKIPS = {
    # Prefill and mixed steps run the CUDA plugin's Triton kernels (cuda-interpret checks them; the engine
    # never captures prefill); MACA's graph-captured decode (flash_attn) is checked step by step in
    # tests/vendors/test_maca.py.  Skipped here for time: the interpreter is slow.
    "paged_attention": "prefill runs the reused Triton kernels (see cuda-interpret); decode graphs: tests/vendors",
}


def providers():
    from halinfer.kernels.triton.interpret import ensure_interpreter

    ok, why = ensure_interpreter()
    if not ok:
        return [Provider("maca-emu", unavailable=f"the reused Triton kernels need the interpreter here: {why}")]
    from vendors.emulation.install import installed, maca_stack
    from vendors.emulation.maca.runtime import triton_launch_attr
    from vendors.providers_util import emulated_provider

    from halinfer.plugins.maca.backend import MacaBackend

    def make():
        return MacaBackend(device_type="cpu")

    half = (torch.float16,)
    mods, attrs = maca_stack()
    gmods, gattrs = maca_stack()
    return [
        emulated_provider(Provider, from_backend, "maca-emu", make, mods, attrs, dtypes=half),
        emulated_provider(Provider, from_backend, "maca-emu-graph", make, gmods, gattrs, graph=True, dtypes=half,
                          skip=GRAPH_SKIPS, capture_ctx=lambda: installed({}, [triton_launch_attr()])),
    ]
