"""Fixtures that install the emulated vendor libraries for one test and remove them after.

``npu_emulation(**config)`` (a factory fixture) puts an emulated torch_npu release into
sys.modules (NpuConfig fields; ``real_version=True`` reports the release's own version,
else this machine's torch release with HALINFER_ALLOW_UNTESTED_VERSIONS=1);
``ascend`` is an AscendBackend on CPU tensors whose available() has run (so its SoC is known).
"""
from __future__ import annotations

import contextlib

import pytest

from .emulation.install import installed, npu_stack
from .emulation.npu import NpuConfig


@pytest.fixture
def npu_emulation():
    stack = contextlib.ExitStack()

    def install(real_version=False, **config):
        mods, attrs, env = npu_stack(NpuConfig(**config), real_version)
        stack.enter_context(installed(mods, attrs, env=env))
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


@pytest.fixture
def maca_emulation():
    """Installs the emulated MACA stack (and puts Triton in interpreter mode, for the
    reused CUDA-plugin kernels); returns a factory taking MacaConfig fields."""
    from halinfer.kernels.triton.interpret import ensure_interpreter

    from .emulation.install import maca_stack
    from .emulation.maca import MacaConfig

    ok, why = ensure_interpreter()
    if not ok:
        pytest.skip(f"the reused Triton kernels need the interpreter here: {why}")
    stack = contextlib.ExitStack()

    def install(**config):
        mods, attrs = maca_stack(MacaConfig(**config))
        stack.enter_context(installed(mods, attrs))

    with stack:
        yield install


def make_maca(maca_emulation, **config):
    from halinfer.plugins.maca.backend import MacaBackend

    maca_emulation(**config)
    b = MacaBackend(device_type="cpu")
    ok, why = b.available()
    assert ok, why
    return b


@pytest.fixture
def mlu_emulation():
    from .emulation.install import mlu_modules
    from .emulation.mlu import MluConfig

    stack = contextlib.ExitStack()

    def install(**config):
        stack.enter_context(installed(mlu_modules(MluConfig(**config))))

    with stack:
        yield install


def make_camb(mlu_emulation, **config):
    from halinfer.plugins.camb.backend import CambBackend

    mlu_emulation(**config)
    b = CambBackend(device_type="cpu")
    ok, why = b.available()
    assert ok, why
    return b


def pytest_sessionfinish(session, exitstatus):
    from .support_records import write_records

    for path in write_records():
        print(f"\nsupport record written: {path}")
