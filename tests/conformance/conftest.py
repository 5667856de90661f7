"""Per-test random generator: fresh inputs, reproducible from the test id.

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
