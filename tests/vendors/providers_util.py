"""Building conformance providers for the emulated vendor backends (used by
tests/conformance/extra_providers/{ascend,camb,maca}_emulated.py)."""
from __future__ import annotations

import torch

from .emulation.install import UNTESTED_OK, installed
from .graph_replay import GraphReplayOps, RecordingBuilder


def emulated_provider(Provider, from_backend, name, make_backend, modules, attrs=(), *, graph=False, skip=None,
                      capture_ctx=None, dtypes=None):
    """A Provider for a plugin backend running on emulated vendor modules (CPU tensors).

    The modules are in sys.modules only while the backend is probed and its ops
    built; the ops keep their own reference to them afterwards.  A failure to
    build raises: collection breaks loudly rather than skipping quietly.
    """
    with installed(modules, attrs, env=UNTESTED_OK):
        backend = make_backend()
        prov = from_backend(backend, name=name)
        if prov.unavailable:
            return prov
        prov.skip.update(skip or {})
        if dtypes is not None:
            prov.dtypes = tuple(d for d in prov.dtypes if d in dtypes)
        if graph:
            # One dtype is enough here: what a graph can break (frozen host values, host
            # syncs) does not depend on it, and the eager provider covers every dtype.
            prov.dtypes = (torch.float16,)
            recorders: list[RecordingBuilder] = []

            def make_builder(device, block_size, _inner=backend.metadata_builder):
                b = RecordingBuilder(_inner(device, block_size))
                recorders.append(b)
                return b

            prov.ops = GraphReplayOps(backend.ops, backend.graph_api(prov.device), recorders, capture_ctx)
            prov.metadata_builder = make_builder
        return prov
