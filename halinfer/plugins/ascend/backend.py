"""Huawei Ascend NPUs through torch_npu: FIA/ATB attention, aclgraph decode graphs.

Importing this module imports no vendor library; ``available()`` imports
torch_npu and reads the device, ``ops`` builds the operator table on first use.
Facts behind every choice: vendors/ascend.md (section numbers cited as §n).
"""
from __future__ import annotations

import functools
import importlib
import os

import torch

from halinfer.core.backend import Backend

from . import soc as _soc
from . import versions as _versions
from .support import declarations

ATB_LIB = os.path.join("lib", "libop_plugin_atb.so")


class AscendBackend(Backend):
    name = "ascend"
    aliases = ("npu",)
    description = "Huawei Ascend NPUs (torch_npu): FIA/ATB attention, aclgraph decode"
    device_type = "npu"
    priority = 90
    dist_backend = "hccl"
    # Declared, unverified on hardware: lmdeploy/dlinfer run TP decode through aclgraph (ascend.md §10)
    graph_collectives = True
    # kv_layout, block_sizes: per SoC (soc.SocProfile).  A2/A3: NHD, per layer (num_blocks,
    # block_size, kv_heads, head_dim), viewed BnBsH by FIA (§2); paged FIA with more than one
    # query token needs a multiple of 128 up to 512 (§3.1).  300I Duo: NZ caches, block <= 128
    # (nz.py).  128 fits every path and is what vllm-ascend and dlinfer use.
    default_block_size = 128
    kv_cache_dtypes = ("auto",)  # §8: int8 KV is not usable with paged FIA prefill

    def __init__(self, device_type: str | None = None):
        # device_type: run on another torch device type.  Only the emulation tests use it
        # (emulated torch_npu ops on CPU tensors); the plugin code is the same either way.
        if device_type is not None:
            self.device_type = device_type
        self._soc: _soc.Soc | None = None

    # ---- which chip; per-SoC attributes ------------------------------------------
    @property
    def soc(self) -> _soc.Soc | None:
        """The detected SoC (after a successful available()), else None."""
        return self._soc

    @property
    def profile(self) -> _soc.SocProfile:
        # Before detection (no device, or not asked yet) describe the A2, the main target.
        return (self._soc.profile if self._soc is not None else None) or _soc.PROFILES[_soc.A2]

    # What differs per SoC is read from its profile (soc.SocProfile).
    dtypes = property(lambda self: self.profile.dtypes)
    graph_modes = property(lambda self: self.profile.graph_modes)
    weight_quant = property(lambda self: self.profile.weight_quant)
    kv_layout = property(lambda self: self.profile.kv_layout)
    block_sizes = property(lambda self: self.profile.block_sizes)

    def kv_cache_shape(self, num_blocks, block_size, num_kv_heads, head_dim):
        if self.kv_layout == "NZ":
            from . import nz

            return nz.cache_shape(num_blocks, block_size, num_kv_heads, head_dim)
        return super().kv_cache_shape(num_blocks, block_size, num_kv_heads, head_dim)

    def allocate_kv_cache(self, shape, dtype, device):
        if self.kv_layout == "NZ":   # the 310P's ATB ops take FRACTAL_NZ caches only
            from . import nz

            return nz.allocate(self._npu(), shape, dtype, device)
        return super().allocate_kv_cache(shape, dtype, device)

    # ---- availability --------------------------------------------------------------
    def _npu(self):
        return importlib.import_module("torch_npu")

    def _atb_state(self, torch_npu) -> str | None:
        """None when the ATB ops are callable, else why not (§1: they need NNAL).

        torch_npu's import always installs op-plugin's lazy ``torch_npu._npu_*`` wrappers, so
        their presence proves nothing; the library is loaded here, by op-plugin's own loader
        (``torch_npu.op_plugin.atb._atb_ops._register_atb_extensions``, which the wrappers
        call first) or, where that is missing, by loading the library directly."""
        try:
            try:
                loader = importlib.import_module("torch_npu.op_plugin.atb._atb_ops")._register_atb_extensions
            except (ImportError, AttributeError):
                lib = os.path.join(os.path.dirname(getattr(torch_npu, "__file__", "") or "."), ATB_LIB)
                loader = functools.partial(torch.ops.load_library, lib)
            loader()
        except Exception as e:  # noqa: BLE001 - OSError from the loader; anything else is a reason too
            return (f"NNAL (ATB) not installed: loading the ATB library failed ({type(e).__name__}: {e}); install "
                    "CANN's NNAL package and source its set_env.sh ('undefined symbol' = NNAL/torch_npu "
                    "version mismatch)")
        return None if hasattr(torch_npu, "_npu_reshape_and_cache") else "NNAL (ATB) ops missing after loading"

    def available(self) -> tuple[bool, str]:
        try:
            try:
                torch_npu = self._npu()
            except Exception as e:  # noqa: BLE001 - any import failure is a reason, never an exception
                return False, f"torch_npu not importable: {type(e).__name__}: {e}"
            why = _versions.torch_npu_problem(str(getattr(torch_npu, "__version__", "")))
            if why:
                return False, why
            npu = torch_npu.npu
            if not npu.is_available() or npu.device_count() < 1:
                return False, ("no NPU visible (torch_npu.npu.device_count() == 0; check the driver and "
                               "ASCEND_RT_VISIBLE_DEVICES)")
            chip = _soc.detect(npu)
            if chip.profile is None:
                return False, (f"SoC {chip.name} (soc_version {chip.version}) is not one this plugin drives; "
                               "supported: Atlas A2 (910B), Atlas A3 (910_93), Atlas 300I Duo (310P)")
            why = self._atb_state(torch_npu)
            if why:
                return False, why
            self._soc = chip
            return True, f"{chip.product} ({chip.name}), torch_npu {torch_npu.__version__}"
        except Exception as e:  # noqa: BLE001
            return False, f"Ascend probe failed: {type(e).__name__}: {e}"

    def device_count(self) -> int:
        try:
            return int(self._npu().npu.device_count())
        except Exception:  # noqa: BLE001
            return 0

    def versions(self) -> dict[str, tuple[str, str]]:
        from .features import OpFeatures

        try:
            npu = self._npu()
            atb, ops = self._atb_state(npu) or "present", OpFeatures.probe(npu).describe()
        except Exception as e:  # noqa: BLE001
            atb = ops = f"unknown ({type(e).__name__})"
        return _versions.report(atb, ops)

    # ---- what the plugin provides ------------------------------------------------------
    @functools.cached_property
    def capture_state(self):
        from .graph import CaptureState

        return CaptureState()

    @functools.cached_property
    def ops(self):
        from .ops import AscendOps

        if self._soc is None:
            self.available()   # the attention path (FIA or ATB) depends on the SoC
        return AscendOps(self._npu(), self.profile, self.capture_state)

    def metadata_builder(self, device, block_size):
        from .metadata import AscendMetadataBuilder

        return AscendMetadataBuilder(device, block_size)

    def graph_api(self, device):
        from .graph import AscendGraphAPI

        return AscendGraphAPI(self._npu(), self.capture_state)

    def graph_capture_sizes(self, max_num_seqs: int) -> list[int]:
        # dlinfer's Ascend buckets (§10): powers of two to 16, multiples of 16 to 256, of 256 above.
        sizes = [1, 2, 4, 8, 16] + list(range(32, 257, 16)) + list(range(512, max(512, max_num_seqs) + 256, 256))
        return [s for s in sizes if s <= max_num_seqs] or [1]

    def runtime(self, device):
        from halinfer.core.runtime import DeviceRuntime

        return DeviceRuntime(device, self._npu().npu)

    # ---- support matrix ------------------------------------------------------------------
    def support(self):
        return declarations()

    def variant(self) -> str:
        return self._soc.product if self._soc is not None else ""
