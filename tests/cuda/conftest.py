"""Where the CUDA plugin's kernel tests run: targets, and Triton's mode.

Every kernel test takes a ``target`` (device, dtype):

  interp-f32, interp-f16   CPU tensors through Triton's interpreter.  They run in
                           the default CPU CI run.  bf16 is left out: the
                           interpreter's bf16 ``tl.dot`` is wrong.
  gpu-bf16, gpu-f16,       CUDA tensors, compiled kernels; marked ``gpu``.
  gpu-f32

Triton picks interpreted or compiled once per process, when it is imported, so
this conftest decides before any kernel module is imported: with no CUDA device
(or HALINFER_TRITON_INTERPRET=1) the process goes to the interpreter (see
halinfer/kernels/triton/interpret.py, which also copes with triton having been
imported earlier, as transformers does); with a CUDA device it stays compiled
and the interpreter targets skip, saying so.  On a machine without CUDA nothing
compiled can run anyway, so the interpreter mode this leaves set for the rest
of the session cannot break other test directories.
"""
from __future__ import annotations

import os
import sys
import zlib
from dataclasses import dataclass

import pytest
import torch

from halinfer.kernels.triton.interpret import cuda_visible, ensure_interpreter, interpreter_wanted

sys.path.insert(0, os.path.dirname(__file__))  # tritonops_util, without making this folder a package

if interpreter_wanted():
    INTERP_OK, INTERP_WHY = ensure_interpreter()
else:
    INTERP_OK, INTERP_WHY = False, ("a CUDA device is visible, so this process runs Triton compiled; the "
                                    "interpreter targets run without CUDA or with HALINFER_TRITON_INTERPRET=1")
GPU_OK = cuda_visible() and not INTERP_OK
GPU_WHY = "no CUDA device" if not cuda_visible() else "this process runs Triton in interpreter mode"


@dataclass(frozen=True)
class Target:
    device: torch.device
    dtype: torch.dtype

    @property
    def interp(self) -> bool:
        return self.device.type == "cpu"


def _targets():
    interp = pytest.mark.skipif(not INTERP_OK, reason=INTERP_WHY)
    gpu = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    return [
        pytest.param(Target(cpu, torch.float32), id="interp-f32", marks=interp),
        pytest.param(Target(cpu, torch.float16), id="interp-f16", marks=interp),
        pytest.param(Target(cuda, torch.bfloat16), id="gpu-bf16", marks=gpu),
        pytest.param(Target(cuda, torch.float16), id="gpu-f16", marks=gpu),
        pytest.param(Target(cuda, torch.float32), id="gpu-f32", marks=gpu),
    ]


@pytest.fixture(params=_targets())
def target(request) -> Target:
    return request.param


@pytest.fixture
def gen(request) -> torch.Generator:
    """Fresh inputs per test, reproducible from its id (HALINFER_TEST_SEED draws others)."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()) ^ int(os.environ.get("HALINFER_TEST_SEED", "0")))
    return g


@pytest.fixture
def ops():
    from halinfer.kernels.triton.ops import TritonOps

    return TritonOps()


@pytest.fixture
def half_target(target):
    """A target with fp16 / bf16 activations (the W4A16 GEMVs take no float32)."""
    import torch

    if target.dtype == torch.float32:
        pytest.skip("the GEMV takes fp16 / bf16 activations")
    return target
