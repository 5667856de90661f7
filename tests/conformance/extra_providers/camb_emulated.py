"""The Cambricon plugin on emulated torch_mlu + torch_mlu_ops (tests/vendors/emulation/mlu), CPU tensors.

camb-emu        eager.
camb-emu-graph  every call captured into an emulated MLUGraph and replayed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..providers import Provider, from_backend

_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

_REFERENCE_HOST_SYNC = "falls back to the core reference, which syncs the host: eager only"
GRAPH_SKIPS = {
    **{f"paged_attention:{f}": _REFERENCE_HOST_SYNC
       for f in ("chunk_size", "soft_cap", "alibi", "sinks", "mla", "int8_kv", "bidirectional")},
    "store_kv:mla": _REFERENCE_HOST_SYNC,
    **{f"fused_moe:{f}": _REFERENCE_HOST_SYNC for f in ("gelu", "gelu_tanh", "swiglu_oai", "bias")},
}


def providers():
    from vendors.emulation.install import mlu_modules
    from vendors.providers_util import emulated_provider

    from halinfer.plugins.camb.backend import CambBackend

    def make():
        return CambBackend(device_type="cpu")

    return [
        emulated_provider(Provider, from_backend, "camb-emu", make, mlu_modules()),
        emulated_provider(Provider, from_backend, "camb-emu-graph", make, mlu_modules(), graph=True,
                          skip=GRAPH_SKIPS),
    ]
