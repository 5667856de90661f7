"""CUDA backend: Triton kernels for attention and the fused small ops, cuBLAS
(through torch) for GEMMs, CUDA graphs for decode steps.

Importing this module imports neither triton nor anything that touches a GPU;
``available()`` checks both, and ``ops`` imports the kernels on first use.
"""
from __future__ import annotations

import functools
import importlib.metadata as md

import torch

from halinfer.core.backend import Backend


def _installed(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


class CudaBackend(Backend):
    name = "cuda"
    description = "NVIDIA GPUs: Triton kernels, CUDA graphs"
    device_type = "cuda"
    priority = 100                     # above cpu (0) for device="auto"
    dist_backend = "nccl"
    graph_collectives = True           # NCCL collectives are capturable in CUDA graphs (NCCL >= 2.9.6)
    kv_layout = "NHD"
    block_sizes = (16, 32, 64, 128)
    # 16: the finest prefix-cache granularity the kernels run at full speed with
    # (keys are gathered row by row, so the block size does not shape their tiles).
    default_block_size = 16
    # Quantized caches: store_kv quantizes per (token, head), attention dequantizes tiles
    # (kernels/triton/tl_math.py); int8, int4 and fp8 kernel tests and KV INT4 cells pass on an H200.
    kv_cache_dtypes = ("auto", "int8", "int4", "fp8")
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    # W4A16 (AWQ/GPTQ: kernels/triton/w4a16.py), W8A8 and FP8 (scaled_gemm.py, FP8 per channel on
    # torch._scaled_mm): kernel tests and declared cells pass on an H200 (2026-12-01).
    weight_quant = ("awq", "gptq", "w8a8", "fp8")
    graph_modes = ("eager", "graph")

    # ---- availability -------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        if getattr(torch.version, "hip", None):
            return False, f"torch {torch.__version__} is a ROCm build, not CUDA"
        if not torch.version.cuda:
            return False, f"torch {torch.__version__} was built without CUDA"
        from halinfer.torch_build import maca_markers

        if maca_markers():  # MetaX's torch looks like CUDA; the maca backend drives it
            return False, f"torch {torch.__version__} is a MetaX MACA build; use device='maca'"
        try:
            if not torch.cuda.is_available():
                return False, "no CUDA device visible (torch.cuda.is_available() is False; check the driver " \
                              "and CUDA_VISIBLE_DEVICES)"
        except Exception as e:  # noqa: BLE001 - a broken driver must not crash device listing
            return False, f"CUDA initialisation failed: {type(e).__name__}: {e}"
        try:
            import triton  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return False, f"triton not importable: {type(e).__name__}: {e}"
        return True, "ok"

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def default_max_num_seqs(self, index):
        # Cards of 70 GiB and more hold the KV of 1,024 sequences beside the weights, and decoding
        # that many at once reads the weights (the experts most of all) once per 1,024 tokens:
        # offline-1000 on an H200 took 13.92 s instead of 15.61 s dense, 7.70 s instead of 13.68 s
        # for the Qwen3-30B-A3B shape (BENCHMARKS.md).  vLLM and LMDeploy cap at 1,024 there too.
        total = torch.cuda.get_device_properties(index or 0).total_memory
        return 1024 if total >= 70 * 2**30 else 256

    def versions(self) -> dict[str, tuple[str, str]]:
        return {
            "torch": (">=2.4,<2.15", torch.__version__),
            "torch CUDA build": ("any", str(torch.version.cuda)),
            "triton": (">=3.0", _installed("triton")),
        }

    # ---- what the plugin provides ---------------------------------------------
    @functools.cached_property
    def ops(self):
        from halinfer.kernels.triton.ops import TritonOps

        return TritonOps()

    def graph_api(self, device):
        from halinfer.core.graph import ModuleGraphAPI

        # Nothing is refreshed before a replay: the Triton kernels read every length from the
        # static metadata tensors, which the runner updates in place.
        return ModuleGraphAPI(torch.cuda, torch.cuda.CUDAGraph)

    # Device and memory: the core's DeviceRuntime on torch.cuda serves as is.
    def support(self):
        from halinfer.support.declare import CUDA_VERIFIED_QUANT_CASES, implemented_rows, quant_rows

        # Every implemented text family runs on the Triton kernels; the weight formats and KV INT4
        # are claimed where a GPU run verified them (support/declare.py: the CPU verifies more
        # families, which stay this plugin's candidates until a GPU run passes them).
        return quant_rows(implemented_rows({"FP16/BF16": True, "KV INT8": True, "KV INT4": True}),
                          {"W8A8": True, "W4A16": True, "FP8": True}, cases=CUDA_VERIFIED_QUANT_CASES,
                          kv_int4_cases=CUDA_VERIFIED_QUANT_CASES)
