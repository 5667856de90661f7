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
    kv_layout = "HND"                  # §2: (num_blocks, kv_heads, block_size, head_dim)
    block_sizes = (16,)                # §2: paged flash_attention supports only 16
    default_block_size = 16
    kv_cache_dtypes = ("auto",)        # int8 paged caches exist in TMO but lmdeploy rejects them; not wired here
    dtypes = (torch.float16, torch.bfloat16)
    graph_modes = ("eager", "graph")
    seeded_sampling = True             # the core's counter-based sampler: no torch.multinomial (§9)

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

    def graph_api(self):
        from .graph import MluGraphAPI

        return MluGraphAPI(self._mod("torch_mlu"))

    def graph_runner(self, model_fn, device, *, sizes=None, max_blocks_per_seq=None, block_size=None,
                     max_seq_len=None, **kw):
        from halinfer.core.graph import CapturedDecodeRunner, EagerRunner

        if not sizes or max_blocks_per_seq is None or block_size is None or max_seq_len is None:
            return EagerRunner(model_fn)
        return CapturedDecodeRunner(model_fn, self.graph_api(), device, list(sizes), max_blocks_per_seq,
                                    block_size, max_seq_len)

    # ---- device and memory ------------------------------------------------------------------
    def _mlu(self):
        return self._mod("torch_mlu").mlu

    def set_device(self, device):
        # torch_mlu (like torch.cuda) wants an ordinal: "mlu" without one means the current device.
        mlu = self._mlu()
        mlu.set_device(device.index if device.index is not None else mlu.current_device())

    def synchronize(self, device):
        self._mlu().synchronize()

    def mem_get_info(self, device):
        return tuple(self._mlu().mem_get_info())

    def memory_allocated(self, device):
        return int(self._mlu().memory_allocated())

    def max_memory_allocated(self, device):
        return int(self._mlu().max_memory_allocated())

    def empty_cache(self):
        self._mlu().empty_cache()

    def support(self):
        return declarations()
