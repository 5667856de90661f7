"""A stand-in MACA software stack: markers on torch, torch.cuda entry points, mcoplib
(and the torch.ops namespaces its extensions register), MetaX flash_attn."""
from __future__ import annotations

import types
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from . import flash_attn, kernels, runtime


@dataclass
class MacaConfig:
    device_count: int = 1
    device_name: str = "MetaX C500"
    mark_build: bool = True           # torch._utils_internal.USE_MACA present
    topk_softmax_args: int = 5        # open-source mcoplib: 5; dlinfer's closed build: 4
    with_flash_attn: bool = True
    total_bytes: int = 64 << 30
    free_bytes: int = 60 << 30


def _module(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def build(cfg: MacaConfig | None = None):
    """(modules for sys.modules, attribute patches) of the emulated MACA stack."""
    cfg = cfg or MacaConfig()
    C = SimpleNamespace(rms_norm=kernels.rms_norm, fused_add_rms_norm=kernels.fused_add_rms_norm,
                        silu_and_mul=kernels.silu_and_mul)
    cache_ops = SimpleNamespace(reshape_and_cache_flash=kernels.reshape_and_cache_flash)
    moe_C = SimpleNamespace(topk_softmax=kernels.make_topk_softmax(cfg.topk_softmax_args))
    lmdeploy = _module("mcoplib.lmdeploy", lmdeploy_rotary_embedding=kernels.lmdeploy_rotary_embedding)
    mods = {
        "mcoplib": _module("mcoplib", lmdeploy=lmdeploy, __version__="0.0.0+emulated"),
        "mcoplib.lmdeploy": lmdeploy,
        "mcoplib._C": _module("mcoplib._C"),
        "mcoplib._moe_C": _module("mcoplib._moe_C"),
    }
    if cfg.with_flash_attn:
        mods["flash_attn"] = _module("flash_attn", flash_attn_with_kvcache=flash_attn.flash_attn_with_kvcache,
                                     __version__="2.6.3+metax-emulated")
    import torch._utils_internal as internal

    attrs = runtime.cuda_attrs(cfg) + [
        (torch.ops, "_C", C), (torch.ops, "_C_cache_ops", cache_ops), (torch.ops, "_moe_C", moe_C),
    ]
    if cfg.mark_build:
        attrs.append((internal, "USE_MACA", True))
    attrs.append(runtime.triton_launch_attr())
    return mods, attrs
