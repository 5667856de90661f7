"""The CUDA plugin's Triton kernels on CPU tensors, through Triton's interpreter.

cuda-interpret   TritonOps (halinfer/kernels/triton/ops.py) with the CUDA backend's
                 declarations (layout, block sizes, KV cache dtypes), in float32
                 and float16 only: the interpreter's bf16 ``tl.dot`` is wrong.

Triton is interpreted or compiled per process, fixed when it is imported;
``ensure_interpreter`` switches a process with no CUDA device to the interpreter
(re-importing triton's Python modules if something imported it already).  With
a CUDA device the process stays compiled and this provider reports itself
unavailable: there the plugin's own "cuda" provider tests the compiled kernels.
"""
from __future__ import annotations

import torch

from ..providers import Provider, from_backend

NAME = "cuda-interpret"


def providers() -> list[Provider]:
    from halinfer.kernels.triton.interpret import ensure_interpreter, interpreter_wanted

    if not interpreter_wanted():
        return [Provider(NAME, unavailable="a CUDA device is visible, so triton runs compiled in this process; "
                                           "the 'cuda' provider tests the compiled kernels")]
    ok, why = ensure_interpreter()
    if not ok:
        return [Provider(NAME, unavailable=why)]
    from halinfer.plugins.cuda.backend import CudaBackend
    from halinfer.kernels.triton.ops import TritonOps

    # Every quantized GEMM kernel is tested here, declared on cuda or not: the declarations
    # follow the GPU runs (tests/cuda/test_quant_gemm_gpu.py, the declared-support cells).
    # fp8 tiles run in the interpreter since the kernel loads them as bytes and bitcasts.
    return [from_backend(CudaBackend(), name=NAME, ops=TritonOps(), device=torch.device("cpu"),
                         dtypes=(torch.float32, torch.float16), unavailable=None,
                         weight_quant=("awq", "gptq", "w8a8", "fp8"))]
