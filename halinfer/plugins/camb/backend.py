"""Cambricon MLUs through torch_mlu + torch_mlu_ops (TMO); MLU graphs for decode.

Importing this module imports no vendor library; ``available()`` imports
torch_mlu and torch_mlu_ops, ``ops`` builds the operator table on first use.
Facts behind every choice: vendors/camb.md (section numbers cited as §n).
"""
from __future__ import annotations

import functools
import importlib

import torch

from halinfer.core.backend import Backend

from . import versions as _versions
from .support import declarations


class CambBackend(Backend):
    name = "camb"
    aliases = ("mlu",)
    description = "Cambricon MLUs (torch_mlu + torch_mlu_ops), MLU graphs for decode"
    device_type = "mlu"
    priority = 80
    dist_backend = "cncl"              # §1: registered by torch_mlu/mlu/cncl.py
    # Declared, unverified on hardware: lmdeploy camb replays TP decode in MLU graphs (camb.md §8)
    graph_collectives = True
    kv_layout = "HND"                  # §2: (num_blocks, kv_heads, block_size, head_dim)
    block_sizes = (16,)                # §2: paged flash_attention supports only 16
    default_block_size = 16
    kv_cache_dtypes = ("auto",)        # int8 paged caches exist in TMO but lmdeploy rejects them; not wired here
    dtypes = (torch.float16, torch.bfloat16)
    graph_modes = ("eager", "graph")

    def __init__(self, device_type: str | None = None):
        # device_type: run on another torch device type.  Only the emulation tests use it
        # (emulated torch_mlu ops on CPU tensors); the plugin code is the same either way.
        if device_type is not None:
            self.device_type = device_type
        self._w8a8 = None   # which TMO W8A8 pair exists (ops.w8a8_api), known after available()

    @property
    def weight_quant(self):
        # W8A8 only where this TMO exports a W8A8 pair; W4A16's int4 nibble order is not documented
        return ("w8a8",) if self._w8a8 else ()

    # ---- availability ------------------------------------------------------------------
    @staticmethod
    def _mod(name):
        return importlib.import_module(name)

    def available(self) -> tuple[bool, str]:
        try:
            try:
                torch_mlu = self._mod("torch_mlu")
            except Exception as e:  # noqa: BLE001
                return False, f"torch_mlu not importable: {type(e).__name__}: {e}"
            mlu = torch_mlu.mlu
            if not mlu.is_available() or mlu.device_count() < 1:
                return False, "no MLU visible (torch_mlu.mlu.device_count() == 0; check the driver and MLU_VISIBLE_DEVICES)"
            try:
                tmo = self._mod("torch_mlu_ops")
            except Exception as e:  # noqa: BLE001
                return False, f"torch_mlu_ops not importable: {type(e).__name__}: {e}"
            why = _versions.tmo_problem(str(getattr(tmo, "__version__", "")))
            if why:
                return False, why
            from .ops import w8a8_api

            self._w8a8 = w8a8_api(tmo)
            return True, f"{mlu.get_device_name()}, torch_mlu {getattr(torch_mlu, '__version__', '?')}, " \
                         f"torch_mlu_ops {tmo.__version__}"
        except Exception as e:  # noqa: BLE001
            return False, f"Cambricon probe failed: {type(e).__name__}: {e}"

    def device_count(self) -> int:
        try:
            return int(self._mod("torch_mlu").mlu.device_count())
        except Exception:  # noqa: BLE001
            return 0

    def versions(self) -> dict[str, tuple[str, str]]:
        return _versions.report()

    # ---- what the plugin provides --------------------------------------------------------
    @functools.cached_property
    def ops(self):
        from .ops import CambOps

        return CambOps(self._mod("torch_mlu_ops"))

    def metadata_builder(self, device, block_size):
        from .metadata import CambMetadataBuilder

        return CambMetadataBuilder(device, block_size)

    def graph_api(self, device):
        from halinfer.core.graph import ModuleGraphAPI

        # Nothing is refreshed before a replay: every length TMO's decode kernel reads is a
        # device tensor the runner updates in place (§8: dlinfer captures the same way).
        mlu = self._mlu()
        return ModuleGraphAPI(mlu, mlu.MLUGraph)

    # ---- device and memory ------------------------------------------------------------------
    def _mlu(self):
        return self._mod("torch_mlu").mlu

    def runtime(self, device):
        from halinfer.core.runtime import DeviceRuntime

        return DeviceRuntime(device, self._mlu())

    def support(self):
        return declarations()
