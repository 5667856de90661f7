"""Where a decoder layer's RMSNorm may quantize the activations of the linears it feeds
(Ops.rms_norm_quant), decided once per model after its weights are loaded.

A norm is fused only where its output feeds nothing but linears that quantize their
input dynamically, all the same way: W8A8, or FP8 without a static input scale.  Who
reads a norm's output is declared, not inferred: an attention or feed-forward block
that passes its input x to nothing but some linears lists them in ``input_linears()``
(LlamaAttention: the merged qkv; GatedMLP: the merged gate_up), and the declaration
counts only where the class that declares it also defines the block's ``forward`` (a
subclass with its own forward may read x elsewhere).  Everything else keeps the
unfused path: LayerNorm, a norm subclass, a DecoderLayer subclass with its own
forward, a MoE block (its router reads the float x), MLA, a dense or ignored module,
a static FP8 scale, a row-parallel linear (it would need the float x's shard).

Each fused norm carries the quantization as ``RMSNorm.quant`` (None: unfused), so what
was decided can be read off the model.  ``HALINFER_FUSE_NORM_QUANT``: "0" leaves every
norm unfused (for comparing), "1" fuses wherever the layer allows even on a table that
only has the reference composition, unset / "auto" fuses where the backend's table
implements rms_norm_quant itself (the fusion saves nothing otherwise).

The same switch governs the deferred norms (``plan_norm_defer``, core/ops/deferred.py): a
norm whose one declared reader is an AWQ linear hands it a NormedInput at batch 1 and its GEMV
computes the norm (``RMSNorm.defer``); a gated MLP whose down_proj is AWQ leaves its activation
to down_proj's GEMV the same way (``GatedMLP.defer_act``, Ops.w4a16_linear_gated), opt-in
(HALINFER_DEFER_ACT=1: slower on an H200).

The same switch governs the gated MLP's fusion (Ops.act_and_mul_quant,
``plan_mlp_quant_fusion``): a ``GatedMLP`` (that exact class: a subclass with its own
forward keeps the unfused path) whose down_proj quantizes its input dynamically gets
that quantization as ``GatedMLP.down_quant``, and its forward hands down_proj the
activation's QuantizedActs.  The activation's output feeds nothing but down_proj, so no
declaration is needed.  down_proj is row-parallel: its input is this rank's shard of the
intermediate channels, which its forward hands unchanged to the quantizing linear, so
the fused op quantizes exactly what the linear would (any tensor-parallel size).
"""
from __future__ import annotations

import os

from torch import nn

from ..core.ops import ActQuant, Ops
from .decoder import DecoderLayer
from .layers import GatedMLP, Linear, RMSNorm
from .parallel import RowParallelLinear

FUSE_ENV = "HALINFER_FUSE_NORM_QUANT"
# opt-in: the activation left to down_proj measured slower on an H200 (AWQ Llama-3-8B decode-b1,
# 2026-12-03, one call: 375.8 tok/s with it against 383.2 with the deferred norms alone; BENCHMARKS.md)
DEFER_ACT_ENV = "HALINFER_DEFER_ACT"


def fusion_mode() -> str:
    """"off", "on" or "auto", from HALINFER_FUSE_NORM_QUANT."""
    v = os.environ.get(FUSE_ENV, "auto").strip().lower()
    if v in ("0", "off", "false", "no"):
        return "off"
    if v in ("1", "on", "true", "yes"):
        return "on"
    if v in ("", "auto"):
        return "auto"
    raise ValueError(f"{FUSE_ENV}={v!r}: expected 0, 1 or auto")


def _defining_class(obj, attr: str):
    return next((c for c in type(obj).__mro__ if attr in c.__dict__), None)


def _declared_inputs(block: nn.Module) -> list[Linear] | None:
    """The linears that alone read the block's input, where the block declares them for
    the forward it runs; None otherwise."""
    cls = _defining_class(block, "input_linears")
    if cls is None or cls is not _defining_class(block, "forward"):
        return None
    return list(block.input_linears())


def _act_quant(linears: list[Linear]) -> ActQuant | None:
    """The one dynamic activation quantization every linear applies, or None."""
    specs = set()
    for lin in linears:
        if not isinstance(lin, Linear) or isinstance(lin, RowParallelLinear):
            return None
        get = getattr(lin.qm, "act_quant", None)   # methods without it quantize no activations
        spec = get(lin) if get is not None else None
        if spec is None:
            return None
        specs.add(spec)
    return specs.pop() if len(specs) == 1 else None


def _norm_blocks(model: nn.Module):
    """(norm, the block reading its output) of every standard DecoderLayer (a subclass with its
    own forward may read a norm's output elsewhere)."""
    for layer in model.modules():
        if isinstance(layer, DecoderLayer) and _defining_class(layer, "forward") is DecoderLayer:
            yield layer.input_layernorm, layer.self_attn
            yield layer.post_attention_layernorm, layer.mlp


def _norm_plan(norm: nn.Module, block: nn.Module) -> ActQuant | None:
    if type(norm) is not RMSNorm:
        return None
    linears = _declared_inputs(block)
    if not linears or any(lin.in_features != norm.weight.shape[0] for lin in linears):
        return None
    return _act_quant(linears)


def plan_norm_quant_fusion(model: nn.Module, ops: Ops | None = None) -> int:
    """Set ``RMSNorm.quant`` on every norm of a standard DecoderLayer that may fuse (and
    clear it elsewhere).  Returns the number of fused norms.  Call after the weights are
    loaded: a module a checkpoint left unquantized becomes dense only then."""
    for m in model.modules():
        if isinstance(m, RMSNorm):
            m.quant = None
    mode = fusion_mode()
    ops = ops if ops is not None else getattr(model, "ops", None)
    if mode == "off":
        return 0
    if mode == "auto" and ops is not None and type(ops).rms_norm_quant is Ops.rms_norm_quant:
        return 0
    fused = 0
    for norm, block in _norm_blocks(model):
        spec = _norm_plan(norm, block)
        if spec is not None:
            norm.quant = spec
            fused += 1
    return fused


def _defer_plan(norm: nn.Module, block: nn.Module) -> bool:
    """True where the norm's output feeds one linear only, whose method takes a NormedInput."""
    if type(norm) is not RMSNorm or norm.quant is not None:
        return False
    linears = _declared_inputs(block)
    if not linears or len(linears) != 1:
        return False
    lin = linears[0]
    return (isinstance(lin, Linear) and not isinstance(lin, RowParallelLinear)
            and _defining_class(lin, "forward") is Linear and lin.in_features == norm.weight.shape[0]
            and getattr(lin.qm, "takes_deferred_input", False))


def plan_norm_defer(model: nn.Module, ops: Ops | None = None) -> int:
    """Set ``RMSNorm.defer`` on every norm of a standard DecoderLayer whose one reader is an AWQ
    linear (Ops.w4a16_linear_normed: the GEMV norms its input itself at batch 1), under the same
    HALINFER_FUSE_NORM_QUANT modes (auto: where the table implements w4a16_linear_normed).
    With HALINFER_DEFER_ACT=1 also sets ``GatedMLP.defer_act`` (the activation left to an AWQ
    down_proj).
    Call after plan_norm_quant_fusion and plan_mlp_quant_fusion; returns the norms deferred."""
    for m in model.modules():
        if isinstance(m, RMSNorm):
            m.defer = False
        if isinstance(m, GatedMLP):
            m.defer_act = False
    mode = fusion_mode()
    ops = ops if ops is not None else getattr(model, "ops", None)
    if mode == "off" or (mode == "auto" and ops is not None
                         and type(ops).w4a16_linear_normed is Ops.w4a16_linear_normed):
        return 0
    n = 0
    for norm, block in _norm_blocks(model):
        if _defer_plan(norm, block):
            norm.defer = True
            n += 1
    if os.environ.get(DEFER_ACT_ENV, "0") == "1":
        for m in model.modules():
            if isinstance(m, GatedMLP):
                m.defer_act = _act_defer_plan(m)
    return n


def _act_defer_plan(mlp: nn.Module) -> bool:
    """True where the gated MLP's activation may be left to its AWQ down_proj (w4a16_linear_gated)."""
    down = mlp.down_proj
    return (type(mlp) is GatedMLP and mlp.down_quant is None and mlp.act in ("silu", "gelu", "gelu_tanh")
            and isinstance(down, Linear) and _defining_class(down, "forward") in (Linear, RowParallelLinear)
            and getattr(down.qm, "takes_deferred_input", False)
            and list(mlp.gate_up_proj.out_sizes) == [down.in_features] * 2)


def deferred_norms(model: nn.Module) -> list[str]:
    """Names of the norms plan_norm_defer deferred."""
    return [n for n, m in model.named_modules() if isinstance(m, RMSNorm) and m.defer]


def deferred_acts(model: nn.Module) -> list[str]:
    """Names of the gated MLPs whose activation plan_norm_defer left to down_proj."""
    return [n for n, m in model.named_modules() if isinstance(m, GatedMLP) and getattr(m, "defer_act", False)]


def fused_norms(model: nn.Module) -> dict[str, ActQuant]:
    """Name -> activation quantization of every norm plan_norm_quant_fusion fused."""
    return {n: m.quant for n, m in model.named_modules() if isinstance(m, RMSNorm) and m.quant is not None}


def _mlp_plan(mlp: nn.Module) -> ActQuant | None:
    """The activation quantization down_proj applies, where the MLP may compute it in its
    activation's launch; None otherwise."""
    if type(mlp) is not GatedMLP:
        return None
    down, gate_up = mlp.down_proj, mlp.gate_up_proj
    # a linear class with a forward of its own might not hand its input straight to the method
    if not isinstance(down, Linear) or _defining_class(down, "forward") not in (Linear, RowParallelLinear):
        return None
    if list(gate_up.out_sizes) != [down.in_features] * 2:
        return None
    get = getattr(down.qm, "act_quant", None)   # methods without it quantize no activations
    return get(down) if get is not None else None


def plan_mlp_quant_fusion(model: nn.Module, ops: Ops | None = None) -> int:
    """Set ``GatedMLP.down_quant`` on every gated MLP whose activation may quantize down_proj's
    input (and clear it elsewhere), under the same HALINFER_FUSE_NORM_QUANT modes as the norms
    (auto: where the table's act_and_mul_quant_pays says its fused op is faster for that
    quantization).  Returns the number fused.
    Call after the weights are loaded, as plan_norm_quant_fusion."""
    for m in model.modules():
        if isinstance(m, GatedMLP):
            m.down_quant = None
    mode = fusion_mode()
    ops = ops if ops is not None else getattr(model, "ops", None)
    if mode == "off":
        return 0
    fused = 0
    for m in model.modules():
        spec = _mlp_plan(m)
        if spec is not None and mode == "auto" and ops is not None and \
                not ops.act_and_mul_quant_pays(spec, m.down_proj.in_features):
            continue
        if spec is not None:
            m.down_quant = spec
            fused += 1
    return fused


def fused_mlps(model: nn.Module) -> dict[str, ActQuant]:
    """Name -> activation quantization of every gated MLP plan_mlp_quant_fusion fused."""
    return {n: m.down_quant for n, m in model.named_modules()
            if isinstance(m, GatedMLP) and getattr(m, "down_quant", None) is not None}
