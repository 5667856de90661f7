"""The operator contract.

``Ops`` is the table of every operator a model may call.  Each method's docstring
(here and in the reference function it delegates to) states shapes, dtypes and
layouts exactly: that is what a vendor plugin implements against.  This class is
also the torch-native reference: a backend subclasses it and overrides what it
accelerates; the conformance suite compares each override with these methods on
random inputs.  An override hands a call it cannot run back to the reference only
through ``reference(op, case, ...)``, for a case its class declares in ``fallbacks``
(fallback.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import activation as _act
from . import fp8 as _fp8
from . import gptq as _gptq
from . import moe as _moe
from . import norm as _norm
from . import deferred as _nd
from . import norm_quant as _nq
from . import paged as _paged
from . import quant as _quant
from . import rotary as _rotary
from . import sample as _sample
from . import vision as _vision
from .fallback import UndeclaredFallback, check_declared, log_once
from .norm_quant import ActQuant, QuantizedActs
from .sample import SamplingTensors

__all__ = ["Ops", "SamplingTensors", "OP_NAMES", "UndeclaredFallback", "ActQuant", "QuantizedActs"]

# Every operator a backend may override (the conformance suite tests each one).
OP_NAMES = (
    "rms_norm", "layer_norm", "rotary", "silu_and_mul", "gelu_and_mul", "swiglu_oai", "act_and_mul",
    "gelu", "act", "store_kv", "paged_attention", "linear", "w4a16_linear", "prepare_gptq", "gptq_linear",
    "w8a8_linear",
    "quant_per_token_int8", "fp8_linear", "moe_route", "fused_moe", "apply_penalties", "sample",
    "patch_embed", "vision_attention", "mrope", "rms_norm_quant", "w8a8_linear_prequant", "fp8_linear_prequant",
    "act_and_mul_quant", "w4a16_linear_normed", "w4a16_linear_gated", "rotary_store_kv",
)


class Ops:
    """Reference implementation of every operator (pure torch, any device)."""

    # op name -> the cases in which this table's override hands the call to the reference
    # (see fallback.py); the reference itself declares none.
    fallbacks: dict[str, tuple[str, ...]] = {}

    def reference(self, op: str, case: str, *args, **kwargs):
        """Run the core reference of ``op`` for a ``case`` this table declares in ``fallbacks``."""
        assert op in OP_NAMES, f"unknown op {op!r}"
        check_declared(type(self), op, case)
        log_once(type(self), op, case)
        return getattr(Ops, op)(self, *args, **kwargs)

    # -- normalisation ----------------------------------------------------
    def rms_norm(self, x, weight, eps, residual=None):
        return _norm.rms_norm(x, weight, eps, residual)
    rms_norm.__doc__ = _norm.rms_norm.__doc__

    def rms_norm_quant(self, x, weight, eps, quant: ActQuant, residual=None):
        # the reference composes this table's own rms_norm and int8 quantizer: what the
        # unfused path (rms_norm, then the linear quantizing its input) computes here
        return _nq.rms_norm_quant(self, x, weight, eps, quant, residual)
    rms_norm_quant.__doc__ = _nq.rms_norm_quant.__doc__

    def layer_norm(self, x, weight, bias, eps, residual=None):
        return _norm.layer_norm(x, weight, bias, eps, residual)
    layer_norm.__doc__ = _norm.layer_norm.__doc__

    # -- position ---------------------------------------------------------
    def rotary(self, q, k, positions, cos_sin_cache, is_neox=True):
        return _rotary.rotary(q, k, positions, cos_sin_cache, is_neox)
    rotary.__doc__ = _rotary.rotary.__doc__

    def mrope(self, q, k, positions, cos_sin_cache, mrope_section, is_neox=True, interleaved=False):
        return _vision.mrope(q, k, positions, cos_sin_cache, mrope_section, is_neox, interleaved)
    mrope.__doc__ = _vision.mrope.__doc__

    # -- vision encoders ----------------------------------------------------
    def patch_embed(self, patches, weight, bias=None):
        return _vision.patch_embed(patches, weight, bias)
    patch_embed.__doc__ = _vision.patch_embed.__doc__

    def vision_attention(self, q, k, v, cu_seqlens, scale):
        return _vision.vision_attention(q, k, v, cu_seqlens, scale)
    vision_attention.__doc__ = _vision.vision_attention.__doc__

    # -- activations ------------------------------------------------------
    def silu_and_mul(self, x):
        """[..., 2I] -> [..., I]: silu(x[..., :I]) * x[..., I:]."""
        return _act.silu_and_mul(x)

    def gelu_and_mul(self, x, approximate="none"):
        """[..., 2I] -> [..., I]: gelu(x[..., :I]) * x[..., I:] (approximate "none" or "tanh")."""
        return _act.gelu_and_mul(x, approximate)

    def swiglu_oai(self, x, alpha=1.702, limit=7.0):
        return _act.swiglu_oai(x, alpha, limit)
    swiglu_oai.__doc__ = _act.swiglu_oai.__doc__

    def act_and_mul(self, x, kind: str):
        """Dispatch by name: "silu", "gelu", "gelu_tanh", "swiglu_oai"."""
        if kind == "silu":
            return self.silu_and_mul(x)
        if kind == "gelu":
            return self.gelu_and_mul(x)
        if kind == "gelu_tanh":
            return self.gelu_and_mul(x, "tanh")
        if kind == "swiglu_oai":
            return self.swiglu_oai(x)
        raise ValueError(f"unknown gated activation {kind!r}; known: silu, gelu, gelu_tanh, swiglu_oai")

    def act_and_mul_quant(self, x, kind: str, quant: ActQuant):
        # the reference composes this table's own act_and_mul and int8 quantizer: what the
        # unfused path (act_and_mul, then down_proj quantizing its input) computes here
        return _nq.act_and_mul_quant(self, x, kind, quant)
    act_and_mul_quant.__doc__ = _nq.act_and_mul_quant.__doc__

    def act_and_mul_quant_pays(self, quant: ActQuant, width: int) -> bool:
        """Whether this table's act_and_mul_quant beats act_and_mul plus the linear's own
        quantization for ``quant`` over rows of ``width`` (what the load-time plan asks in its
        auto mode).  The reference's is that composition, so never."""
        return type(self).act_and_mul_quant is not Ops.act_and_mul_quant

    def gelu(self, x, approximate="none"):
        return _act.gelu(x, approximate)
    gelu.__doc__ = _act.gelu.__doc__

    def act(self, x, kind: str):
        """Non-gated activation by name (same names as act_and_mul): "gelu", "gelu_tanh"."""
        if kind == "gelu":
            return self.gelu(x)
        if kind == "gelu_tanh":
            return self.gelu(x, "tanh")
        if kind == "quick_gelu":   # CLIP and Qwen2-VL vision towers
            return x * torch.sigmoid(1.702 * x)
        raise ValueError(f"unknown activation {kind!r}; known: gelu, gelu_tanh, quick_gelu")

    # -- paged KV cache and attention ---------------------------------------
    def store_kv(self, k, v, kv, slot_mapping):
        return _paged.store_kv(k, v, kv, slot_mapping)
    store_kv.__doc__ = _paged.store_kv.__doc__

    def rotary_store_kv(self, q, k, v, positions, cos_sin_cache, is_neox, kv, slot_mapping):
        # the reference composes this table's own rotary and store_kv (paged.py)
        return _paged.rotary_store_kv(self, q, k, v, positions, cos_sin_cache, is_neox, kv, slot_mapping)
    rotary_store_kv.__doc__ = _paged.rotary_store_kv.__doc__

    def paged_attention(self, q, kv, meta, *, scale, causal=True, sliding_window=None, chunk_size=None,
                        soft_cap=None, alibi_slopes=None, sinks=None, v_head_dim=None, bidir_spans=None):
        return _paged.paged_attention(
            q, kv, meta, scale=scale, causal=causal, sliding_window=sliding_window, chunk_size=chunk_size,
            soft_cap=soft_cap, alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim,
            bidir_spans=bidir_spans,
        )
    paged_attention.__doc__ = _paged.paged_attention.__doc__

    # -- GEMMs --------------------------------------------------------------
    def linear(self, x, weight, bias=None):
        """x [T, K] @ weight[N, K]^T + bias[N] -> [T, N], x's dtype."""
        return F.linear(x, weight, bias)

    def w4a16_linear(self, x, qweight, scales, qzeros, group_size, bias=None):
        return _quant.w4a16_linear(x, qweight, scales, qzeros, group_size, bias)
    w4a16_linear.__doc__ = _quant.w4a16_linear.__doc__

    def w4a16_linear_normed(self, xn, qweight, scales, qzeros, group_size, bias=None):
        # the reference composes this table's own rms_norm and w4a16_linear (deferred.py)
        return _nd.w4a16_linear_normed(self, xn, qweight, scales, qzeros, group_size, bias)
    w4a16_linear_normed.__doc__ = _nd.w4a16_linear_normed.__doc__

    def w4a16_linear_gated(self, xg, qweight, scales, qzeros, group_size, bias=None):
        # the reference composes this table's own act_and_mul and w4a16_linear (deferred.py)
        return _nd.w4a16_linear_gated(self, xg, qweight, scales, qzeros, group_size, bias)
    w4a16_linear_gated.__doc__ = _nd.w4a16_linear_gated.__doc__

    def prepare_gptq(self, qweight, qzeros, scales, g_idx, bits):
        """One-time re-layout of a GPTQ linear's tensors for this table's ``gptq_linear``.

        Called once per linear when its tensors are final (after a checkpoint load, v1 zeros
        already converted, or after random dummy init), never during a forward step.  Takes
        the tensors in gptq_linear's documented layout (core/ops/gptq.py) on their device and
        returns a dict of keyword arguments for gptq_linear:
          * always the keys "qweight", "qzeros", "scales", "g_idx": tensors (or None) in a
            layout of this table's choosing;
          * optionally extra keys (tensors, or Python ints / bools / None fixed at load) that
            this table's gptq_linear accepts as keyword-only arguments.
        Afterwards the caller keeps only what was returned (the originals are dropped, so no
        second copy stays) and calls ``gptq_linear(x, **prepared, bits=bits, bias=bias)``; the
        result must equal the reference gptq_linear on the original tensors.  Inputs are not
        written (results may alias them).  Host syncs are allowed here (load time).

        The reference returns its inputs unchanged and no extras, so the documented layout is
        the prepared form of every table that does not override this.  A table overriding one
        of prepare_gptq / gptq_linear keeps the pair consistent (conformance runs them as a
        pair).
        """
        return {"qweight": qweight, "qzeros": qzeros, "scales": scales, "g_idx": g_idx}

    def gptq_linear(self, x, qweight, qzeros, scales, g_idx, bits, bias=None):
        return _gptq.gptq_linear(x, qweight, qzeros, scales, g_idx, bits, bias)
    gptq_linear.__doc__ = _gptq.gptq_linear.__doc__.rstrip() + """

    The tensors (and keyword extras) are what this table's ``prepare_gptq`` returned: for the
    reference, and for every table that does not override prepare_gptq, the layout above.
    """

    def fp8_linear(self, x, weight, weight_scale, block_k, bias=None, input_scale=None):
        return _fp8.fp8_linear(x, weight, weight_scale, block_k, bias, input_scale)
    fp8_linear.__doc__ = _fp8.fp8_linear.__doc__

    def quant_per_token_int8(self, x):
        return _quant.quant_per_token_int8(x)
    quant_per_token_int8.__doc__ = _quant.quant_per_token_int8.__doc__

    def w8a8_linear(self, x, weight, weight_scale, bias=None):
        return _quant.w8a8_linear(x, weight, weight_scale, bias)
    w8a8_linear.__doc__ = _quant.w8a8_linear.__doc__

    # The 8-bit GEMMs fed by rms_norm_quant / act_and_mul_quant (models/norm_quant_plan.py decides where).
    def w8a8_linear_prequant(self, xq: QuantizedActs, weight, weight_scale, bias=None):
        return _nq.w8a8_linear_prequant(xq, weight, weight_scale, bias)
    w8a8_linear_prequant.__doc__ = _nq.w8a8_linear_prequant.__doc__

    def fp8_linear_prequant(self, xq: QuantizedActs, weight, weight_scale, block_k, bias=None):
        return _nq.fp8_linear_prequant(xq, weight, weight_scale, block_k, bias)
    fp8_linear_prequant.__doc__ = _nq.fp8_linear_prequant.__doc__

    # -- mixture of experts -------------------------------------------------
    def moe_route(self, logits, top_k, *, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
                  correction_bias=None, routed_scaling=1.0):
        return _moe.moe_route(logits, top_k, scoring=scoring, renormalize=renormalize, num_groups=num_groups,
                              topk_groups=topk_groups, correction_bias=correction_bias,
                              routed_scaling=routed_scaling)
    moe_route.__doc__ = _moe.moe_route.__doc__

    def fused_moe(self, x, w13, w2, topk_weights, topk_ids, *, activation="silu", w13_bias=None, w2_bias=None):
        return _moe.fused_moe(x, w13, w2, topk_weights, topk_ids, activation=activation, w13_bias=w13_bias,
                              w2_bias=w2_bias)
    fused_moe.__doc__ = _moe.fused_moe.__doc__

    # -- sampling -------------------------------------------------------------
    def apply_penalties(self, logits, prompt_mask, output_counts, repetition, presence, frequency):
        return _sample.apply_penalties(logits, prompt_mask, output_counts, repetition, presence, frequency)
    apply_penalties.__doc__ = _sample.apply_penalties.__doc__

    def sample(self, logits: torch.Tensor, st: SamplingTensors) -> torch.Tensor:
        return _sample.sample(logits, st)
    sample.__doc__ = _sample.sample.__doc__
