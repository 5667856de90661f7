"""Per-test random generator: fresh inputs, reproducible from the test id.
Every provider test also runs under a FallbackSpy (fallback_spy.py): reaching the core
reference from an override without declaring the case fails the test.

Set HALINFER_CONFORMANCE_SEED to draw a different set of inputs."""
from __future__ import annotations

import os
import zlib

import pytest
import torch


@pytest.fixture
def gen(request) -> torch.Generator:
    base = int(os.environ.get("HALINFER_CONFORMANCE_SEED", "0"))
    g = torch.Generator()  # CPU: inputs are drawn on the host, then moved to the provider's device
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()) ^ base)
    return g


@pytest.fixture
def unrestricted_plugins():
    """Tests about plugin loading see every plugin, whatever HALINFER_PLUGINS the run has."""
    from .fake_plugins import plugins_env

    with plugins_env(None):
        yield


@pytest.fixture(autouse=True)
def no_silent_fallback(request):
    """An override may reach the core reference only through Ops.reference (declared cases)."""
    from .fallback_spy import HITS, RAN, FallbackSpy, ops_class

    params = getattr(getattr(request.node, "callspec", None), "params", {})
    prov, op = params.get("prov"), getattr(request.function, "conformance_op", None)
    if prov is None or getattr(prov, "ops", None) is None or op is None:
        yield
        return
    spy = FallbackSpy(ops_class(prov.ops))
    with spy.watching():
        yield
    assert not spy.silent, (f"{spy.cls.__name__} reached the core reference of {sorted(set(spy.silent))} "
                            "without Ops.reference(op, case): declare the case in fallbacks and call reference()")
    RAN[spy.cls].add(op)
    for o, c in spy.hits:
        HITS[spy.cls][o].add(c)
