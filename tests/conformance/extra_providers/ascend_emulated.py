"""The Ascend plugin on emulated torch_npu (tests/vendors/emulation/npu), CPU tensors.

ascend-emu-a2         Atlas A2 profile, eager.
ascend-emu-a2-graph   the same ops, every call captured into an emulated NPUGraph and
                      replayed (host-side FIA lengths refreshed through task updates).
ascend-emu-310p-graph Atlas 300I Duo profile (ATB attention, float16), captured and replayed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..providers import Provider, from_backend

_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# Calls the plugin hands to the core reference, which reads lengths on the host:
# fine eagerly, not capturable.  (Listed so the graph providers skip them with the reason.)
_REFERENCE_HOST_SYNC = "falls back to the core reference, which syncs the host: eager only"
GRAPH_SKIPS = {
    **{f"paged_attention:{f}": _REFERENCE_HOST_SYNC
       for f in ("sliding_window", "chunk_size", "soft_cap", "alibi", "sinks", "mla", "int8_kv", "d72", "bidirectional")},
    "store_kv:mla": _REFERENCE_HOST_SYNC,
    **{f"fused_moe:{f}": _REFERENCE_HOST_SYNC for f in ("gelu", "gelu_tanh", "swiglu_oai", "bias")},
}
P310_EXTRA = {   # 300I Duo: ATB attention covers decode and prefill without history only
    "paged_attention": "300I Duo: prefill over a cached prefix / mixed steps use the host-syncing reference; "
                       "decode graphs are tested in tests/vendors/test_ascend_graph.py",
    "store_kv": "300I Duo: FRACTAL_NZ caches, which the conformance cache builder (NHD/HND) does not make; "
                "the NZ store is tested in tests/vendors (test_emulation_npu.py, test_release_matrix.py)",
}


def providers():
    from vendors.emulation.install import npu_modules
    from vendors.emulation.npu import NpuConfig
    from vendors.providers_util import emulated_provider

    from halinfer.plugins.ascend.backend import AscendBackend

    def make():
        return AscendBackend(device_type="cpu")

    return [
        emulated_provider(Provider, from_backend, "ascend-emu-a2", make, npu_modules(NpuConfig("A2"))),
        emulated_provider(Provider, from_backend, "ascend-emu-a2-graph", make, npu_modules(NpuConfig("A2")),
                          graph=True, skip=GRAPH_SKIPS),
        emulated_provider(Provider, from_backend, "ascend-emu-310p-graph", make, npu_modules(NpuConfig("310P")),
                          graph=True, skip={**GRAPH_SKIPS, **P310_EXTRA}),
    ]
