"""A stand-in ``torch_npu`` module built from the emulated ops.

``build_torch_npu(NpuConfig(...))`` returns a module object; the test fixture
(tests/vendors/conftest.py) puts it into ``sys.modules`` for one test and
removes it afterwards.  The config picks the emulated machine: SoC (A2 by
default; 310P for the 300I Duo), device count, torch_npu / CANN versions, and
whether the ATB ops (NNAL) are present.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import torch

from . import attention, moe, ops, runtime

SOCS = {  # variant -> (soc name, soc_version) as vendors/ascend.md §1 lists them
    "A2": ("Ascend910B2", 223),
    "A3": ("Ascend910_9391", 250),
    "310P": ("Ascend310P3", 202),
    "950": ("Ascend950PR", 260),
}


@dataclass
class NpuConfig:
    soc: str = "A2"
    device_count: int = 1
    version: str | None = None        # torch_npu.__version__; default: the installed torch's release
    cann: str = "8.2.RC1"
    atb: bool = True                  # NNAL installed (the _npu_* ATB ops exist)
    old_soc_api: bool = False         # a torch_npu without get_soc_version
    total_bytes: int = 64 << 30
    free_bytes: int = 60 << 30

    @property
    def soc_name(self):
        return SOCS[self.soc][0]

    @property
    def soc_version(self):
        return None if self.old_soc_api else SOCS[self.soc][1]


def build_torch_npu(cfg: NpuConfig | None = None) -> types.ModuleType:
    cfg = cfg or NpuConfig()
    m = types.ModuleType("torch_npu")
    m.__file__ = "/emulated/torch_npu/__init__.py"
    m.__version__ = cfg.version or torch.__version__.split("+")[0] + ".post1"
    m.npu = runtime.build(cfg)
    m.utils = types.SimpleNamespace(get_cann_version=lambda module="CANN": cfg.cann)
    m.npu_fused_infer_attention_score = attention.FiaPacket()
    m._npu_fused_infer_attention_score_get_max_workspace = attention.fia_max_workspace
    for f in (ops.npu_rms_norm, ops.npu_add_rms_norm, ops.npu_apply_rotary_pos_emb, ops.npu_swiglu,
              ops.npu_dynamic_quant, ops.npu_quant_matmul, ops.npu_weight_quant_batchmatmul,
              moe.npu_moe_gating_top_k_softmax, moe.npu_moe_init_routing_v2, moe.npu_grouped_matmul,
              moe.npu_moe_token_unpermute):
        setattr(m, f.emulated_name, f)
    if cfg.atb:
        m._npu_reshape_and_cache = ops.npu_reshape_and_cache
        m._npu_paged_attention = attention.npu_paged_attention
        m._npu_flash_attention = attention.npu_flash_attention
    return m
