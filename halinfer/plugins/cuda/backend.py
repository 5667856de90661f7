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


def _index(device) -> int:
    """The CUDA ordinal of ``device``; "cuda" without an index means the current device."""
    device = torch.device(device)
    return torch.cuda.current_device() if device.index is None else device.index


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
    kv_cache_dtypes = ("auto", "int8")
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    weight_quant = ()                  # the core's AWQ / W8A8 references are not declared for speed
    graph_modes = ("eager", "graph")
    seeded_sampling = True

    # ---- availability -------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        if getattr(torch.version, "hip", None):
            return False, f"torch {torch.__version__} is a ROCm build, not CUDA"
        if not torch.version.cuda:
            return False, f"torch {torch.__version__} was built without CUDA"
        from halinfer.plugins.maca.detect import maca_markers

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

    def versions(self) -> dict[str, tuple[str, str]]:
        return {
            "torch": (">=2.4,<2.15", torch.__version__),
            "torch CUDA build": ("any", str(torch.version.cuda)),
            "triton": (">=3.0", _installed("triton")),
        }

    # ---- what the plugin provides ---------------------------------------------
    @functools.cached_property
    def ops(self):
        from .ops import TritonOps

        return TritonOps()

    def graph_runner(self, model_fn, device, *, sizes=None, max_blocks_per_seq=None, block_size=None,
                     max_seq_len=None, **kw):
        from halinfer.core.graph import CapturedDecodeRunner, EagerRunner

        from .graph import CudaGraphAPI

        if not sizes or max_blocks_per_seq is None or block_size is None or max_seq_len is None:
            return EagerRunner(model_fn)
        return CapturedDecodeRunner(model_fn, CudaGraphAPI(device), device, list(sizes), max_blocks_per_seq,
                                    block_size, max_seq_len)

    # ---- device and memory ------------------------------------------------------
    # torch.cuda's calls disagree on whether torch.device("cuda") (no index) is accepted: pass ordinals.
    def support(self):
        from halinfer.support.declare import implemented_rows

        # Every implemented text family runs on the Triton kernels; AWQ/W8A8 GEMMs are not
        # accelerated yet, so those columns are not claimed.
        return implemented_rows({"FP16/BF16": True, "KV INT8": True, "KV INT4": False, "W8A8": False,
                                 "W4A16": False})

    def host_buffer(self, shape, dtype):
        return torch.empty(shape, dtype=dtype, pin_memory=True)  # so device->host copies do not block

    def record_event(self, device):
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(_index(device)))
        return ev

    def set_device(self, device: torch.device) -> None:
        torch.cuda.set_device(_index(device))

    def synchronize(self, device: torch.device) -> None:
        torch.cuda.synchronize(_index(device))

    def mem_get_info(self, device: torch.device) -> tuple[int, int]:
        return torch.cuda.mem_get_info(_index(device))

    def memory_allocated(self, device: torch.device) -> int:
        return torch.cuda.memory_allocated(_index(device))

    def max_memory_allocated(self, device: torch.device) -> int:
        return torch.cuda.max_memory_allocated(_index(device))

    def reset_peak_memory(self, device: torch.device) -> None:
        torch.cuda.reset_peak_memory_stats(_index(device))

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()
