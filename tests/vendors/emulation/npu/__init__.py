"""A stand-in ``torch_npu`` module for one torch_npu release, built from the emulated ops.

``build_torch_npu(NpuConfig(...))`` returns a module object; the test fixture
(tests/vendors/conftest.py) puts it into ``sys.modules`` for one test and removes it
afterwards.  The config picks the emulated machine: torch_npu release (a branch of
Ascend/pytorch, as releases.json names it), SoC, device count, CANN version, and
whether NNAL (the ATB library) is installed.

The module exposes exactly the ops of its release's pinned op-plugin, each bound to
that release's schema (schema.SchemaOp): a call with an argument the real op lacks,
or a keyword-only argument passed positionally, raises as torch.ops would.  The ATB
ops are op-plugin's lazy wrappers (``_atb_ops.API_LIST``): present whether or not
NNAL is, they raise OSError on the first call without it.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import types
from dataclasses import dataclass

import torch

from ..schema import OpPacket, SchemaOp
from . import atb, attention, formats, moe, ops, runtime

with open(os.path.join(os.path.dirname(__file__), "releases.json")) as _f:
    RELEASES = json.load(_f)
NEWEST = "v2.9.0-26.1.0"
OLDEST = "v2.5.1-7.0.0"

# SoC name and soc_version as torch.npu reports them (enum SocVersion in torch_npu's
# csrc/core/npu/NpuVariables.h; names per vendors/ascend.md §1)
SOCS = {
    "A2": ("Ascend910B2", 221),
    "A3": ("Ascend910_9391", 250),
    "310P": ("Ascend310P3", 202),
    "950": ("Ascend950PR", 260),
    "910": ("Ascend910B", 104),      # first-generation 910 (Ascend910ProB + 1), not an A2
}

IMPLS = {f.emulated_name: f for f in (
    ops.npu_rms_norm, ops.npu_add_rms_norm, ops.npu_apply_rotary_pos_emb, ops.npu_swiglu, ops.npu_dynamic_quant,
    ops.npu_quant_matmul, ops.npu_weight_quant_batchmatmul, moe.npu_moe_gating_top_k_softmax,
    moe.npu_moe_init_routing_v2, moe.npu_grouped_matmul, moe.npu_moe_token_unpermute,
    attention.fia_default, attention.fia_out, attention.fia_max_workspace)}
FORMAT_IMPLS = {"empty_with_format": formats.empty_with_format, "npu_format_cast": formats.npu_format_cast,
                "get_npu_format": formats.get_npu_format}
NNAL_MISSING = ("Please check that the nnal package is installed. Please run 'source set_env.sh' in the NNAL "
                "installation path.")   # op-plugin op_plugin/python/atb/_atb_ops.py


@dataclass
class NpuConfig:
    soc: str = "A2"
    release: str = NEWEST
    device_count: int = 1
    version: str | None = None        # torch_npu.__version__; default: the installed torch's release
    cann: str = "8.2.RC1"
    atb: bool = True                  # NNAL installed: the ATB library loads
    old_soc_api: bool = False         # a torch_npu without get_soc_version
    total_bytes: int = 64 << 30
    free_bytes: int = 60 << 30

    @property
    def soc_name(self):
        return SOCS[self.soc][0]

    @property
    def soc_version(self):
        return None if self.old_soc_api else SOCS[self.soc][1]

    @property
    def op_set(self) -> dict:
        return RELEASES["op_sets"][RELEASES["releases"][self.release]["op_set"]]

    @property
    def release_version(self) -> str:
        return RELEASES["releases"][self.release]["torch_npu"]


def _not_emulated(name):
    def fail(*a, **k):
        raise NotImplementedError(f"emulation: {name} exists in this release but is not emulated")
    return fail


def _packets(schemas: dict[str, str], impls: dict) -> dict[str, OpPacket]:
    by_op: dict[str, dict[str, SchemaOp]] = {}
    for full, schema in schemas.items():
        name, _, overload = full.partition(".")
        impl = impls.get(full) or _not_emulated(full)
        by_op.setdefault(name, {})[overload or "default"] = SchemaOp(schema, impl)
    return {name: OpPacket(name, ov) for name, ov in by_op.items()}


def _atb_module(cfg, op_set) -> tuple[types.ModuleType, dict]:
    """op-plugin's _atb_ops: _register_atb_extensions (loads NNAL or raises OSError) and
    the lazy wrappers torch_npu._npu_* that call it first."""
    mod = types.ModuleType("torch_npu.op_plugin.atb._atb_ops")

    @functools.lru_cache(None)
    def _register_atb_extensions():
        if not cfg.atb:
            raise OSError(errno.ENOENT, NNAL_MISSING)

    mod._register_atb_extensions = _register_atb_extensions
    impls = atb.build(cfg.soc)
    wrappers = {}
    for name in op_set["atb_api_list"]:
        schema = op_set["atb"].get(name)
        real = SchemaOp(schema, impls[name], ns="atb") if schema and name in impls else _not_emulated(name)

        def lazy(*args, _real=real, **kwargs):
            _register_atb_extensions()
            return _real(*args, **kwargs)

        wrappers[name] = lazy
    return mod, wrappers


def build_modules(cfg: NpuConfig | None = None) -> dict[str, types.ModuleType]:
    """{'torch_npu': ..., 'torch_npu.op_plugin...': ...} for one emulated release."""
    cfg = cfg or NpuConfig()
    op_set = cfg.op_set
    m = types.ModuleType("torch_npu")
    m.__file__ = "/emulated/torch_npu/__init__.py"
    m.__version__ = cfg.version or torch.__version__.split("+")[0] + ".post1"
    m.npu = runtime.build(cfg)
    m.utils = types.SimpleNamespace(get_cann_version=lambda module="CANN": cfg.cann)
    schemas = {k: v for k, v in op_set["ops"].items() if k not in FORMAT_IMPLS}
    for name, packet in _packets(schemas, IMPLS).items():
        setattr(m, name, packet)
    for name in FORMAT_IMPLS:
        setattr(m, name, SchemaOp(op_set["ops"][name], FORMAT_IMPLS[name]))
    atb_ops, wrappers = _atb_module(cfg, op_set)
    for name, fn in wrappers.items():
        setattr(m, name, fn)
    pkgs = {}
    for name in ("torch_npu.op_plugin", "torch_npu.op_plugin.atb"):
        pkgs[name] = types.ModuleType(name)
    pkgs["torch_npu.op_plugin.atb._atb_ops"] = atb_ops
    m.op_plugin = pkgs["torch_npu.op_plugin"]
    m.op_plugin.atb = pkgs["torch_npu.op_plugin.atb"]
    m.op_plugin.atb._atb_ops = atb_ops
    return {"torch_npu": m, **pkgs}


def build_torch_npu(cfg: NpuConfig | None = None) -> types.ModuleType:
    return build_modules(cfg)["torch_npu"]

