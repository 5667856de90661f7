"""Fixtures that install the emulated vendor libraries for one test and remove them after.

``npu_emulation(**config)`` (a factory fixture) puts an emulated torch_npu into
sys.modules, with HALINFER_ALLOW_UNTESTED_VERSIONS=1 because the emulation
reports this machine's torch release; ``ascend`` is an AscendBackend on CPU
tensors whose available() has run (so its SoC is known).
"""
from __future__ import annotations

import contextlib

import pytest

from .emulation.install import UNTESTED_OK, installed, npu_modules
from .emulation.npu import NpuConfig


@pytest.fixture
def npu_emulation():
    stack = contextlib.ExitStack()

    def install(**config):
        mods = npu_modules(NpuConfig(**config))
        stack.enter_context(installed(mods, env=UNTESTED_OK))
        return mods["torch_npu"]

    with stack:
        yield install


def make_ascend(npu_emulation, **config):
    from halinfer.plugins.ascend.backend import AscendBackend

    npu_emulation(**config)
    b = AscendBackend(device_type="cpu")
    ok, why = b.available()
    assert ok, why
    return b


@pytest.fixture
def ascend(npu_emulation):
    return make_ascend(npu_emulation)
