"""``TritonOps``: the core's operator table with the hot ops on Triton kernels.

Overridden: rms_norm, rotary, silu_and_mul, gelu_and_mul, store_kv (and rotary_store_kv, both
in one launch) and
moe_route (ungrouped), paged_attention (prefill/mixed and split-KV decode; GQA/MQA,
causal or not, sliding window, chunked attention, soft-cap, ALiBi, sinks, MLA,
int8 / fp8 / int4 KV, NHD and HND caches), vision_attention (16-bit: torch's
varlen flash attention or SDPA over runs of equal-length sequences,
kernels/vision_attention.py), fused_moe (tokens grouped by expert on
the device, one launch per GEMM for all experts), and the quantized GEMMs: W4A16 in
AWQ and GPTQ layouts (a GEMV for M <= 16, split-K tiles up to M = 64, dequantize +
torch GEMM for prefill; prepare_gptq re-lays 4-bit GPTQ, act-order too, into AWQ's
layout once at load, so GPTQ runs AWQ's kernels), W8A8 int8 and FP8 (per-token
activation quantization in one launch, then cuBLASLt FP8 through torch._scaled_mm where it exists, else one
scaled 8-bit Triton GEMM; rms_norm_quant puts the activation quantization inside the
norm's launch where a model feeds a norm straight into such GEMMs, act_and_mul_quant inside
the gated activation's launch before a W8A8 / FP8 down_proj, and the *_prequant GEMMs take
their output).  Everything else is the core's torch reference: dense
GEMMs stay on cuBLAS through torch, and layer_norm, swiglu_oai, grouped MoE routing and sampling are
plain torch ops too (softmax / sigmoid routing without expert groups is one Triton
launch, moe_route.py).

The kernels run on whatever device the tensors are on (CUDA compiled, CPU through
Triton's interpreter), so the CUDA plugin uses this class as its table and the MACA
plugin builds on it.  The device API is named in a few narrow places only: the 8-bit
GEMMs' cuBLASLt dispatch (torch._scaled_mm / torch._int_mm need CUDA and a compute
capability), graph-capture checks before a one-time sync (w4a16.py, scaled_gemm.py),
the W4A16 GEMV's inline PTX, skipped on ROCm, and interpret.py's choice of compiled or
interpreted Triton.
"""
from __future__ import annotations

from halinfer.core.ops import Ops
from halinfer.core.ops import paged as _paged
from halinfer.kernels import vision_attention as _vision

from . import act_mul_quant as _amq
from . import activation as _act
from . import attention_decode as _decode
from . import attention_prefill as _prefill
from . import fused_moe as _moe
from . import moe_route as _route
from . import norm as _norm
from . import norm_quant as _nq
from . import rotary as _rotary
from . import scaled_gemm as _sgemm
from . import w4a16 as _w4a16
from . import store_kv as _store


class TritonOps(Ops):
    """Triton kernels for the hot ops; the core reference for the rest."""

    # Grouped top-k (DeepSeek-V3, GLM-4.5) routes on the reference; every other case is a kernel.
    # float32 vision attention stays on the reference (the fused kernels are 16-bit; see
    # kernels/vision_attention.py)
    # FP8 activation groups that are neither a power of two nor the whole row are quantized
    # after the norm kernel, not inside it (norm_quant.py).
    # act_and_mul_quant: swiglu_oai has no Triton kernel here (act_and_mul runs it in torch), so
    # its fused form is that torch composition too.
    fallbacks = {"moe_route": ("grouped_topk",), "vision_attention": ("float32",),
                 "rms_norm_quant": ("fp8_group_not_pow2",), "act_and_mul_quant": ("swiglu_oai",)}

    # The attention kernels' int4 unpack in inline PTX (tl_math.INT4_ASM); False where this
    # table runs on a Triton that compiles for something else (MacaOps).
    inline_ptx = True

    def __init__(self, decode_splits: int | None = None):
        # decode_splits: fix the split-KV count (tests, tuning); None picks it from the grid size.
        self.decode_splits = decode_splits

    def rms_norm(self, x, weight, eps, residual=None):
        return _norm.rms_norm(x, weight, eps, residual)
    rms_norm.__doc__ = Ops.rms_norm.__doc__

    def rms_norm_quant(self, x, weight, eps, quant, residual=None):
        # fp8 for cuBLASLt's block-scaled GEMM: written in its layout here, not copied there
        col = quant.kind == "fp8" and _sgemm.block_layout_wanted(x, quant.group)
        out = _nq.rms_norm_quant(x, weight, eps, quant, residual, pad_rows_to=4 if col else 1,
                                 scales_col_major=col)
        if out is None:
            return self.reference("rms_norm_quant", "fp8_group_not_pow2", x, weight, eps, quant, residual)
        return out
    rms_norm_quant.__doc__ = Ops.rms_norm_quant.__doc__

    def act_and_mul_quant(self, x, kind, quant):
        if kind == "swiglu_oai":
            return self.reference("act_and_mul_quant", "swiglu_oai", x, kind, quant)
        if not _amq.fusable(kind):
            raise ValueError(f"unknown gated activation {kind!r}; known: silu, gelu, gelu_tanh, swiglu_oai")
        if not self._triton_activation(kind):
            # a subclass computing the activation with kernels of its own: the fused kernel would
            # not give its bits; such a table declares this case (MacaOps)
            return self.reference("act_and_mul_quant", "vendor_activation", x, kind, quant)
        # fp8 for cuBLASLt's block-scaled GEMM: written in its layout here, not copied there
        col = quant.kind == "fp8" and _sgemm.block_layout_wanted(x.reshape(-1, x.shape[-1])[:, : x.shape[-1] // 2],
                                                                 quant.group)
        return _amq.act_and_mul_quant(x, kind, quant, pad_rows_to=4 if col else 1, scales_col_major=col)
    act_and_mul_quant.__doc__ = Ops.act_and_mul_quant.__doc__

    def act_and_mul_quant_pays(self, quant, width):
        # fp8 groups only: on an H200 (benchmarks/kernels/bench_act_mul_quant.py, I = 14336, bf16)
        # the group kernel took 3.0 / 8.6 / 27.7 us at T = 1 / 256 / 1024 against 4.5 / 11.1 / 43.3
        # for the two launches, while the whole-row kernel (int8, fp8 per channel) lost at decode
        # sizes: int8 14.3 / 15.3 us against 9.1 / 13.3 (44.4 against 46.2 at T = 1024).
        return quant.kind == "fp8" and quant.group < width

    def _triton_activation(self, kind) -> bool:
        """Whether this table's act_and_mul(x, kind) is activation.py's kernel, whose bits the
        fused kernel reproduces."""
        cls = type(self)
        name = "silu_and_mul" if kind == "silu" else "gelu_and_mul"
        return cls.act_and_mul is Ops.act_and_mul and getattr(cls, name) is getattr(TritonOps, name)

    def rotary(self, q, k, positions, cos_sin_cache, is_neox=True):
        return _rotary.rotary(q, k, positions, cos_sin_cache, is_neox)
    rotary.__doc__ = Ops.rotary.__doc__

    def silu_and_mul(self, x):
        return _act.silu_and_mul(x)
    silu_and_mul.__doc__ = Ops.silu_and_mul.__doc__

    def gelu_and_mul(self, x, approximate="none"):
        return _act.gelu_and_mul(x, approximate)
    gelu_and_mul.__doc__ = Ops.gelu_and_mul.__doc__

    def store_kv(self, k, v, kv, slot_mapping):
        return _store.store_kv(k, v, kv, slot_mapping)
    store_kv.__doc__ = Ops.store_kv.__doc__

    def rotary_store_kv(self, q, k, v, positions, cos_sin_cache, is_neox, kv, slot_mapping):
        # one launch (store_kv.py) where this table's rotary and store_kv are the kernels whose
        # arithmetic it repeats; otherwise the composition of the table's own two (MacaOps)
        cls = type(self)
        if cls.rotary is TritonOps.rotary and cls.store_kv is TritonOps.store_kv:
            return _store.rotary_store_kv(q, k, v, positions, cos_sin_cache, is_neox, kv, slot_mapping)
        return _paged.rotary_store_kv(self, q, k, v, positions, cos_sin_cache, is_neox, kv, slot_mapping)
    rotary_store_kv.__doc__ = Ops.rotary_store_kv.__doc__

    def paged_attention(self, q, kv, meta, *, scale, causal=True, sliding_window=None, chunk_size=None,
                        soft_cap=None, alibi_slopes=None, sinks=None, v_head_dim=None, bidir_spans=None):
        kw = dict(scale=scale, sliding_window=sliding_window, chunk_size=chunk_size, soft_cap=soft_cap,
                  alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim, inline_ptx=self.inline_ptx)
        # With one query per sequence, causal or not sees the same keys (all of them);
        # a one-token step with bidirectional spans still goes to the prefill kernel, which reads them.
        if meta.is_decode and q.shape[0] == meta.num_seqs and bidir_spans is None:
            return _decode.paged_attention_decode(q, kv, meta, num_splits=self.decode_splits, **kw)
        return _prefill.paged_attention_prefill(q, kv, meta, causal=causal, bidir_spans=bidir_spans, **kw)
    paged_attention.__doc__ = Ops.paged_attention.__doc__

    def vision_attention(self, q, k, v, cu_seqlens, scale):
        out = _vision.vision_attention(q, k, v, cu_seqlens, scale)
        return out if out is not None else self.reference("vision_attention", "float32", q, k, v, cu_seqlens, scale)
    vision_attention.__doc__ = Ops.vision_attention.__doc__

    def w4a16_linear(self, x, qweight, scales, qzeros, group_size, bias=None):
        return _w4a16.awq_linear(x, qweight, scales, qzeros, group_size, bias)
    w4a16_linear.__doc__ = Ops.w4a16_linear.__doc__

    def w4a16_linear_normed(self, xn, qweight, scales, qzeros, group_size, bias=None):
        # batch 1 on the v3a GEMV (the norm in its programs); otherwise the reference's
        # composition of this table's rms_norm and w4a16_linear (not a fallback: both are kernels)
        y = _w4a16.awq_linear_normed(xn, qweight, scales, qzeros, group_size, bias)
        return y if y is not None else self.w4a16_linear(xn.materialize(self), qweight, scales, qzeros, group_size, bias)
    w4a16_linear_normed.__doc__ = Ops.w4a16_linear_normed.__doc__

    def w4a16_linear_gated(self, xg, qweight, scales, qzeros, group_size, bias=None):
        # batch 1 on the v3a GEMV where this table's act_and_mul is activation.py's kernel (the
        # GEMV reproduces its bits); otherwise this table's act_and_mul, then its w4a16_linear
        y = None
        if self._triton_activation(xg.kind):
            y = _w4a16.awq_linear_gated(xg, qweight, scales, qzeros, group_size, bias)
        return y if y is not None else self.w4a16_linear(xg.materialize(self), qweight, scales, qzeros, group_size, bias)
    w4a16_linear_gated.__doc__ = Ops.w4a16_linear_gated.__doc__

    def prepare_gptq(self, qweight, qzeros, scales, g_idx, bits):
        # 4-bit GPTQ with plain or act-order groups: re-laid into AWQ's layout (+ a row
        # permutation) for AWQ's kernels; the rest unchanged (w4a16.gptq_prepare)
        return _w4a16.gptq_prepare(qweight, qzeros, scales, g_idx, bits)
    prepare_gptq.__doc__ = Ops.prepare_gptq.__doc__

    def gptq_linear(self, x, qweight, qzeros, scales, g_idx, bits, bias=None, *, awq_group=None, perm=None):
        # awq_group / perm: prepare_gptq's extras (AWQ-layout tensors); absent: GPTQ's layout
        return _w4a16.gptq_linear(x, qweight, qzeros, scales, g_idx, bits, bias, awq_group=awq_group, perm=perm)
    gptq_linear.__doc__ = Ops.gptq_linear.__doc__

    def w8a8_linear(self, x, weight, weight_scale, bias=None):
        return _sgemm.w8a8_linear(x, weight, weight_scale, bias)
    w8a8_linear.__doc__ = Ops.w8a8_linear.__doc__

    def fp8_linear(self, x, weight, weight_scale, block_k, bias=None, input_scale=None):
        return _sgemm.fp8_linear(x, weight, weight_scale, block_k, bias, input_scale)
    fp8_linear.__doc__ = Ops.fp8_linear.__doc__

    def w8a8_linear_prequant(self, xq, weight, weight_scale, bias=None):
        return _sgemm.w8a8_linear_prequant(xq, weight, weight_scale, bias)
    w8a8_linear_prequant.__doc__ = Ops.w8a8_linear_prequant.__doc__

    def fp8_linear_prequant(self, xq, weight, weight_scale, block_k, bias=None):
        return _sgemm.fp8_linear_prequant(xq, weight, weight_scale, block_k, bias)
    fp8_linear_prequant.__doc__ = Ops.fp8_linear_prequant.__doc__

    def moe_route(self, logits, top_k, *, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
                  correction_bias=None, routed_scaling=1.0):
        if num_groups and topk_groups and num_groups > 1:
            return self.reference("moe_route", "grouped_topk", logits, top_k, scoring=scoring,
                                  renormalize=renormalize, num_groups=num_groups, topk_groups=topk_groups,
                                  correction_bias=correction_bias, routed_scaling=routed_scaling)
        return _route.route(logits, top_k, scoring=scoring, renormalize=renormalize,
                            correction_bias=correction_bias, routed_scaling=routed_scaling)
    moe_route.__doc__ = Ops.moe_route.__doc__

    def fused_moe(self, x, w13, w2, topk_weights, topk_ids, *, activation="silu", w13_bias=None, w2_bias=None):
        return _moe.fused_moe(x, w13, w2, topk_weights, topk_ids, activation=activation, w13_bias=w13_bias,
                              w2_bias=w2_bias)
    fused_moe.__doc__ = Ops.fused_moe.__doc__
