"""MetaX GPUs through MetaX's MACA build of PyTorch (device type "cuda" underneath).

The build presents itself as CUDA (torch.cuda, "cuda" devices, NCCL-named
collectives over MCCL), so this backend has its own identity and detection
(detect.py): it is available only on a MACA build, and outranks the CUDA plugin
for device="auto" there.  Kernels: mcoplib and MetaX's flash_attn where dlinfer
uses them on MACA, the CUDA plugin's Triton kernels for the rest (ops.py).
Importing this module imports no vendor library; facts: vendors/maca.md (§n).
"""
from __future__ import annotations

import functools
import importlib

import torch

from halinfer.core.backend import Backend

from halinfer import torch_build as detect
from . import versions as _versions
from .support import declarations

VENDOR_MODULES = ("mcoplib", "mcoplib._C", "mcoplib._moe_C", "mcoplib.lmdeploy", "flash_attn", "triton")


class MacaBackend(Backend):
    name = "maca"
    description = "MetaX GPUs (MACA PyTorch): mcoplib + MetaX flash_attn + the CUDA plugin's Triton kernels"
    device_type = "cuda"
    priority = 110                     # above the CUDA plugin (100): on a MACA build both see torch.cuda devices
    dist_backend = "nccl"              # §1: MCCL under NCCL's name
    kv_layout = "NHD"                  # §3
    # MetaX flash_attn's paged KV takes multiples of 16 up to 256 (§3); the reused Triton
    # prefill kernel is declared for 16-128 by the CUDA plugin.
    block_sizes = (16, 32, 64, 128)
    default_block_size = 64            # lmdeploy's MACA default
    kv_cache_dtypes = ("auto",)        # flash_attn_with_kvcache reads model-dtype caches
    dtypes = (torch.bfloat16, torch.float16)
    weight_quant = ()                  # the seed claims BF16/FP16 only; no MetaX quantized GEMMs wired
    graph_modes = ("eager", "graph")

    def __init__(self, device_type: str | None = None):
        # device_type: run on another torch device type.  Only the emulation tests use it
        # (emulated mcoplib / flash_attn on CPU tensors); the plugin code is the same either way.
        if device_type is not None:
            self.device_type = device_type

    # ---- availability --------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        try:
            why = detect.not_maca_reason()
            if why:
                return False, why
            if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
                return False, ("no MetaX GPU visible (torch.cuda.device_count() == 0 on a MACA build; check the "
                               "driver, MACA_PATH and CUDA_VISIBLE_DEVICES)")
            for name in VENDOR_MODULES:
                try:
                    importlib.import_module(name)
                except Exception as e:  # noqa: BLE001
                    return False, f"{name} not importable: {type(e).__name__}: {e}"
            return True, f"{torch.cuda.get_device_name()} (MACA: {', '.join(detect.maca_markers())})"
        except Exception as e:  # noqa: BLE001
            return False, f"MACA probe failed: {type(e).__name__}: {e}"

    def device_count(self) -> int:
        try:
            return torch.cuda.device_count()
        except Exception:  # noqa: BLE001
            return 0

    def versions(self) -> dict[str, tuple[str, str]]:
        return _versions.report()

    # ---- what the plugin provides -------------------------------------------------------------
    @functools.cached_property
    def ops(self):
        from .ops import MacaOps

        return MacaOps()

    def graph_api(self, device):
        from halinfer.core.graph import ModuleGraphAPI

        # MetaX's build keeps torch.cuda.CUDAGraph; dlinfer/lmdeploy capture MACA decode with the
        # stock CUDA graph runner (§5).  Nothing is refreshed before a replay: flash_attn_with_kvcache
        # reads every length from device tensors.
        return ModuleGraphAPI(torch.cuda, torch.cuda.CUDAGraph)

    def graph_capture_sizes(self, max_num_seqs: int) -> list[int]:
        # dlinfer pads MACA decode batches to the next power of two (§5).
        sizes, s = [], 1
        while s <= max_num_seqs:
            sizes.append(s)
            s *= 2
        return sizes or [1]

    def runtime(self, device):
        from halinfer.core.runtime import DeviceRuntime

        # torch.cuda drives MetaX GPUs; named here because emulation runs this on CPU tensors.
        return DeviceRuntime(device, torch.cuda)

    def support(self):
        return declarations()
