"""``CambOps``: the core's operator table on torch_mlu_ops (imported as ``tmo``).

Overridden, with the section of vendors/camb.md each follows: rms_norm
(fused_rms_norm, §5), rotary (apply_rotary; note sin before cos, §5),
silu_and_mul (active, §5), store_kv (reshape_paged_cache, §4), paged_attention
(attention.py, §3), linear (matmul, 2-D, §6), quant_per_token_int8 / w8a8_linear
(scaled_quantize + scaled_matmul on TMO 1.12.1, per_token_smooth_quantize +
smooth_quant_matmul on 1.5.0: w8a8_api), moe_route / fused_moe (moe.py, §7),
vision_attention (flash_attention over packed images, non-causal: dlinfer's VL vision path).
Everything else is the core's torch reference, and so are the calls those ops
do not cover, for the cases declared in ``fallbacks``.
"""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.moe import EXPERT_CASES, ROUTE_CASES
from halinfer.core.ops.paged import attention_case, kv_case

from .attention import TmoAttention
from .moe import TmoMoE

HALF = (torch.float16, torch.bfloat16)


def w8a8_api(tmo) -> str | None:
    """Which W8A8 pair this torch_mlu_ops exports: "scaled" (scaled_quantize / scaled_matmul:
    TMO 1.12.1, as vllm-mlu and LightX2V call them), "smooth" (per_token_smooth_quantize /
    smooth_quant_matmul: TMO 1.5.0, as dlinfer calls them), or None."""
    if hasattr(tmo, "scaled_quantize") and hasattr(tmo, "scaled_matmul"):
        return "scaled"
    if hasattr(tmo, "per_token_smooth_quantize") and hasattr(tmo, "smooth_quant_matmul"):
        return "smooth"
    return None


ATTENTION_FEATURES = ("chunked", "soft_cap", "alibi", "sinks", "bidirectional")   # sliding windows run on TMO


class CambOps(Ops):
    fallbacks = {
        "rotary": ("head_dim", "float32"),
        "store_kv": ("mla", "int8_kv", "NHD"),
        "paged_attention": ATTENTION_FEATURES + ("mla", "int8_kv", "NHD", "float32", "gqa_ratio", "mixed_head_dims"),
        "linear": ("float32",),
        "quant_per_token_int8": ("float32",),
        "w8a8_linear": ("float32",),
        "moe_route": ROUTE_CASES,
        "fused_moe": EXPERT_CASES + ("float32",),
        "vision_attention": ("float32",),
    }

    def __init__(self, tmo):
        self.tmo = tmo
        self.w8a8 = w8a8_api(tmo)
        self.attention = TmoAttention(tmo)
        self.moe = TmoMoE(tmo)
        self._ones: dict = {}

    # -- normalisation -----------------------------------------------------------------------
    def rms_norm(self, x, weight, eps, residual=None):
        if residual is None:
            return self.tmo.fused_rms_norm(x.contiguous(), None, weight, None, None, eps, False, None, None)
        y, s = self.tmo.fused_rms_norm(x.contiguous(), residual.contiguous(), weight, None, None, eps, True, None)
        return y, s
    rms_norm.__doc__ = Ops.rms_norm.__doc__

    # -- rotary: in place on (1, T, H, rot) copies, per-token sin/cos rows (dlinfer's call) ----
    def rotary(self, q, k, positions, cos_sin_cache, is_neox=True):
        rot, D = cos_sin_cache.shape[-1], q.shape[-1]
        case = "head_dim" if D > 256 else "float32" if q.dtype not in HALF else None
        if case:
            return self.reference("rotary", case, q, k, positions, cos_sin_cache, is_neox)
        T, half = q.shape[0], rot // 2
        cs = cos_sin_cache.index_select(0, positions)
        c, s = cs[:, :half], cs[:, half:]
        if is_neox:      # halves: channel i and i + rot/2 share angle i
            cos, sin = torch.cat((c, c), -1), torch.cat((s, s), -1)
        else:            # interleaved pairs: channels 2i and 2i+1 share angle i
            cos, sin = c.repeat_interleave(2, -1), s.repeat_interleave(2, -1)
        cos, sin = cos.to(q.dtype).contiguous(), sin.to(q.dtype).contiguous()

        def apply(x):
            xr = x[..., :rot].clone(memory_format=torch.contiguous_format).unsqueeze(0)
            self.tmo.apply_rotary(xr, sin, cos, None, None, not is_neox, False, False, T)
            return xr[0] if rot == D else torch.cat((xr[0], x[..., rot:]), -1)

        return apply(q), apply(k)
    rotary.__doc__ = Ops.rotary.__doc__

    def silu_and_mul(self, x):
        return self.tmo.active(x.contiguous(), "silu", True)

    # -- paged KV cache and attention ---------------------------------------------------------------
    def store_kv(self, k, v, kv, slot_mapping):
        case = kv_case(kv, "HND") or ("mla" if v is None else None)
        if case:
            return self.reference("store_kv", case, k, v, kv, slot_mapping)
        self.tmo.reshape_paged_cache(k.contiguous(), v.contiguous(), kv.k, kv.v, slot_mapping.to(torch.int32))
        return None
    store_kv.__doc__ = Ops.store_kv.__doc__

    def paged_attention(self, q, kv, meta, *, scale, causal=True, sliding_window=None, chunk_size=None,
                        soft_cap=None, alibi_slopes=None, sinks=None, v_head_dim=None, bidir_spans=None):
        kw = dict(scale=scale, causal=causal, sliding_window=sliding_window, chunk_size=chunk_size,
                  soft_cap=soft_cap, alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim)
        if bidir_spans is not None:   # only the reference takes bidirectional spans (Gemma 3's images)
            kw["bidir_spans"] = bidir_spans
        out = attention_case(q, kv, "HND", HALF, ATTENTION_FEATURES, **kw) or \
            self.attention(q, kv, meta, scale, causal, sliding_window)   # a str: the case it cannot take
        return self.reference("paged_attention", out, q, kv, meta, **kw) if isinstance(out, str) else out
    paged_attention.__doc__ = Ops.paged_attention.__doc__

    def vision_attention(self, q, k, v, cu_seqlens, scale):
        if q.dtype not in HALF:
            return self.reference("vision_attention", "float32", q, k, v, cu_seqlens, scale)
        cu = cu_seqlens.to(q.device, torch.int32)
        max_len = q.shape[0]   # an upper bound on the longest image, known without reading cu on the host
        out = torch.empty_like(q)   # never aliases q (§10)
        return self.tmo.flash_attention(q.contiguous(), k.contiguous(), v.contiguous(), out, cu, cu, None, None,
                                        max_len, max_len, float(scale), False, -1, -1, torch.float, False)
    vision_attention.__doc__ = Ops.vision_attention.__doc__

    # -- GEMMs (2-D, weights [N, K]) ------------------------------------------------------------------
    def linear(self, x, weight, bias=None):
        if x.dtype not in HALF:
            return self.reference("linear", "float32", x, weight, bias)
        y = self.tmo.matmul(x.reshape(-1, x.shape[-1]), weight, bias)
        return y.reshape(*x.shape[:-1], weight.shape[0])
    linear.__doc__ = Ops.linear.__doc__

    def _smooth_ones(self, k, device):
        # TMO 1.5.0's per_token_smooth_quantize needs a smooth vector (dlinfer); ones = plain per-token.
        key = (k, device)
        if key not in self._ones:
            self._ones[key] = torch.ones(k, dtype=torch.float32, device=device)
        return self._ones[key]

    def _quantize(self, x):
        """(int8 x, float32 per-token scale) through whichever pair this TMO exports (w8a8_api)."""
        if self.w8a8 is None:   # weight_quant is then empty: the engine refuses W8A8 before this
            raise NotImplementedError("camb: this torch_mlu_ops exports no W8A8 ops (see support.REFUSED)")
        if self.w8a8 == "scaled":
            return self.tmo.scaled_quantize(x.contiguous())
        return self.tmo.per_token_smooth_quantize(x.contiguous(), self._smooth_ones(x.shape[-1], x.device))

    def quant_per_token_int8(self, x):
        if x.dtype not in HALF:
            return self.reference("quant_per_token_int8", "float32", x)
        q, s = self._quantize(x)
        return q, s.float().clamp(min=1e-8 / 127.0)   # the contract's scale for an all-zero row
    quant_per_token_int8.__doc__ = Ops.quant_per_token_int8.__doc__

    def w8a8_linear(self, x, weight, weight_scale, bias=None):
        if x.dtype not in HALF:
            return self.reference("w8a8_linear", "float32", x, weight, weight_scale, bias)
        xq, xs = self._quantize(x)
        if self.w8a8 == "scaled":
            return self.tmo.scaled_matmul(xq, weight, xs, weight_scale.float(), output_dtype=x.dtype, bias=bias)
        return self.tmo.smooth_quant_matmul(xq, xs, weight, weight_scale.float(), x.dtype, bias)
    w8a8_linear.__doc__ = Ops.w8a8_linear.__doc__

    # -- mixture of experts -----------------------------------------------------------------------------
    def moe_route(self, logits, top_k, *, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
                  correction_bias=None, routed_scaling=1.0):
        kw = dict(scoring=scoring, renormalize=renormalize, num_groups=num_groups, topk_groups=topk_groups,
                  correction_bias=correction_bias, routed_scaling=routed_scaling)
        out = self.moe.route(logits, top_k, **kw)
        return self.reference("moe_route", out, logits, top_k, **kw) if isinstance(out, str) else out
    moe_route.__doc__ = Ops.moe_route.__doc__

    def fused_moe(self, x, w13, w2, topk_weights, topk_ids, *, activation="silu", w13_bias=None, w2_bias=None):
        kw = dict(activation=activation, w13_bias=w13_bias, w2_bias=w2_bias)
        out = "float32" if x.dtype not in HALF else self.moe.experts(x, w13, w2, topk_weights, topk_ids, **kw)
        if isinstance(out, str):
            return self.reference("fused_moe", out, x, w13, w2, topk_weights, topk_ids, **kw)
        return out
    fused_moe.__doc__ = Ops.fused_moe.__doc__
