"""``AscendOps``: the core's operator table on torch_npu kernels.

Overridden, each with the fact sheet section it follows (vendors/ascend.md):
rms_norm (npu_rms_norm / npu_add_rms_norm, §5), rotary (npu_apply_rotary_pos_emb
for neox-style rotary over 64 or 128 channels, §5), silu_and_mul (npu_swiglu,
§5), store_kv (ATB _npu_reshape_and_cache, §4), paged_attention (attention.py),
quant_per_token_int8 / w8a8_linear (npu_dynamic_quant + npu_quant_matmul, §7),
w4a16_linear (npu_weight_quant_batchmatmul on repacked AWQ weights, §7; quant.py),
moe_route / fused_moe (npu_moe_* + npu_grouped_matmul, §6; moe.py), vision_attention
(ATB _npu_flash_attention_unpad on A2/A3, dlinfer's ViT path, §3.3).

Where a vendor op does not cover a call (a feature, a shape, a dtype), the core's
torch reference runs instead, for the cases declared in ``fallbacks``: correct,
eager-only for the ones with host syncs (the reference attention and fused_moe).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from halinfer.core.ops import Ops
from halinfer.core.ops.moe import EXPERT_CASES, ROUTE_CASES
from halinfer.core.ops.paged import attention_case, kv_case

from . import nz
from .attention import AtbAttention, FiaAttention
from .features import OpFeatures
from .graph import CaptureState
from .moe import NpuMoE
from .quant import AscendW4A16
from .soc import SocProfile

HALF = (torch.float16, torch.bfloat16)


ATTENTION_FEATURES = ("sliding_window", "chunked", "soft_cap", "alibi", "sinks", "bidirectional")


class AscendOps(Ops):
    fallbacks = {
        "rotary": ("interleaved", "rotary_dim", "float32"),
        "store_kv": ("mla", "int8_kv", "HND", "mixed_head_dims"),
        "paged_attention": ATTENTION_FEATURES + ("mla", "int8_kv", "HND", "float32", "gqa_ratio",
                                                 "mixed_head_dims", "head_shape", "prefix_or_noncausal"),
        "quant_per_token_int8": ("float32",),
        "w8a8_linear": ("float32",),
        "w4a16_linear": ("float32",),
        "moe_route": ROUTE_CASES,
        "fused_moe": EXPERT_CASES + ("experts", "float32"),
        # 310P: dlinfer's ViT takes npu_prompt_flash_attention there, which this plugin does not call
        "vision_attention": ("float32", "310P", "head_dim"),
    }

    def __init__(self, torch_npu, profile: SocProfile, state: CaptureState):
        self.npu = torch_npu
        self.profile = profile
        self.features = OpFeatures.probe(torch_npu)
        self.attention = FiaAttention(torch_npu, state) if profile.attention == "fia" else AtbAttention(torch_npu)
        self.moe = NpuMoE(torch_npu, self.silu_and_mul, self.features)
        self.w4a16 = AscendW4A16(torch_npu)

    # -- normalisation (§5) -------------------------------------------------------------
    def rms_norm(self, x, weight, eps, residual=None):
        if residual is None:
            return self.npu.npu_rms_norm(x.contiguous(), weight, eps)[0]
        y, _, s = self.npu.npu_add_rms_norm(x.contiguous(), residual.contiguous(), weight, eps)
        return y, s
    rms_norm.__doc__ = Ops.rms_norm.__doc__

    # -- rotary (§5): in place on copies; D in {64, 128}, "half" (neox) mode only --------
    def rotary(self, q, k, positions, cos_sin_cache, is_neox=True):
        rot = cos_sin_cache.shape[-1]
        case = "interleaved" if not is_neox else "rotary_dim" if rot not in (64, 128) else \
            "float32" if q.dtype not in HALF else None
        if case:
            return self.reference("rotary", case, q, k, positions, cos_sin_cache, is_neox)
        T, half = q.shape[0], rot // 2
        cs = cos_sin_cache.index_select(0, positions)
        cos = torch.cat((cs[:, :half], cs[:, :half]), -1).to(q.dtype).view(1, T, 1, rot)
        sin = torch.cat((cs[:, half:], cs[:, half:]), -1).to(q.dtype).view(1, T, 1, rot)
        # The op rotates its inputs in place: give it copies (the contract returns new tensors).
        qr = q[..., :rot].clone(memory_format=torch.contiguous_format).unsqueeze(0)
        kr = k[..., :rot].clone(memory_format=torch.contiguous_format).unsqueeze(0)
        # rotary_mode exists from op-plugin 7dee02b (v2.6.0-7.2.0); older kernels always rotate
        # "half" (their layout argument is ignored too: always BSND)
        mode = {"rotary_mode": "half"} if self.features.rotary_mode else {}
        self.npu.npu_apply_rotary_pos_emb(qr, kr, cos, sin, layout="BSND", **mode)
        if rot == q.shape[-1]:
            return qr[0], kr[0]
        return torch.cat((qr[0], q[..., rot:]), -1), torch.cat((kr[0], k[..., rot:]), -1)
    rotary.__doc__ = Ops.rotary.__doc__

    # -- activation (§5) ---------------------------------------------------------------------
    def silu_and_mul(self, x):
        if not self.profile.fused_swiglu:   # 310P: dlinfer computes silu(gate) * up
            d = x.shape[-1] // 2
            return F.silu(x[..., :d]) * x[..., d:]
        return self.npu.npu_swiglu(x.contiguous(), -1)

    # -- paged KV cache (§4) and attention ---------------------------------------------------
    def store_kv(self, k, v, kv, slot_mapping):
        layout = self.profile.kv_layout
        case = kv_case(kv, layout) or ("mla" if v is None else None) or \
            ("mixed_head_dims" if k.shape != v.shape or kv.k.shape[-1] != kv.v.shape[-1] else None)
        if case and layout == "NZ":   # the reference cannot write NZ caches
            raise NotImplementedError(f"Atlas 300I Duo: NZ caches hold float16 K and V of one head dim ({case})")
        if case:
            return self.reference("store_kv", case, k, v, kv, slot_mapping)
        if slot_mapping.shape[0] == 0:
            return None   # §11: _npu_reshape_and_cache fails on an empty slot tensor
        self.npu._npu_reshape_and_cache(k.contiguous(), v.contiguous(), kv.k, kv.v,
                                        slot_mapping.to(torch.int32))
        return None
    store_kv.__doc__ = Ops.store_kv.__doc__

    def paged_attention(self, q, kv, meta, *, scale, causal=True, sliding_window=None, chunk_size=None,
                        soft_cap=None, alibi_slopes=None, sinks=None, v_head_dim=None, bidir_spans=None):
        kw = dict(scale=scale, causal=causal, sliding_window=sliding_window, chunk_size=chunk_size,
                  soft_cap=soft_cap, alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim)
        if bidir_spans is not None:   # only the reference takes bidirectional spans (Gemma 3's images)
            kw["bidir_spans"] = bidir_spans
        layout = self.profile.kv_layout
        case = attention_case(q, kv, layout, HALF, ATTENTION_FEATURES, **kw)
        if not case:
            hk = kv.k.shape[2] if layout == "NHD" else kv.k.shape[1] * 16 // q.shape[-1]
            case = "gqa_ratio" if q.shape[1] // max(hk, 1) > 64 else None   # FIA's group limit
        out = case or self.attention(q, kv, meta, scale, causal)   # a str: the case it cannot take
        if not isinstance(out, str):
            return out
        if kv.layout == "NZ":   # the reference reads NHD: an NHD copy of the cache (slow, eager only)
            kv = nz.to_nhd(kv, q.shape[-1])
        return self.reference("paged_attention", out, q, kv, meta, **kw)
    paged_attention.__doc__ = Ops.paged_attention.__doc__

    def vision_attention(self, q, k, v, cu_seqlens, scale):
        case = ("float32" if q.dtype not in HALF else "310P" if self.profile.kv_layout == "NZ"
                else "head_dim" if q.shape[-1] > 256 else None)   # ATB self-attention: head size <= 256
        if case:
            return self.reference("vision_attention", case, q, k, v, cu_seqlens, scale)
        # per-image lengths on the host (ATB reads seq_len as host data); the encoder runs eagerly
        seq_len = (cu_seqlens[1:] - cu_seqlens[:-1]).to("cpu", torch.int32)
        out = torch.empty_like(q)
        H = q.shape[1]
        self.npu._npu_flash_attention_unpad(q.contiguous(), k.contiguous(), v.contiguous(), seq_len, float(scale),
                                            H, H, out)
        return out
    vision_attention.__doc__ = Ops.vision_attention.__doc__

    # -- quantized GEMMs (§7) -------------------------------------------------------------------
    def quant_per_token_int8(self, x):
        if x.dtype not in HALF:
            return self.reference("quant_per_token_int8", "float32", x)
        q, scale = self.npu.npu_dynamic_quant(x.contiguous())
        return q, scale.clamp(min=1e-8 / 127.0)   # the contract's scale for an all-zero row
    quant_per_token_int8.__doc__ = Ops.quant_per_token_int8.__doc__

    def w8a8_linear(self, x, weight, weight_scale, bias=None):
        if x.dtype not in HALF:
            return self.reference("w8a8_linear", "float32", x, weight, weight_scale, bias)
        xq, xs = self.npu.npu_dynamic_quant(x.contiguous())
        # float32 weight scale + per-token scale: bfloat16 or float16 output (op-plugin's dtype
        # table).  dlinfer asks for bfloat16 even for float16 models (older CANN); that costs
        # float16 models three bits of precision, so the model dtype is asked for here.
        y = self.npu.npu_quant_matmul(xq, weight.t(), weight_scale.float(), pertoken_scale=xs,
                                      output_dtype=x.dtype)
        return y if bias is None else y + bias
    w8a8_linear.__doc__ = Ops.w8a8_linear.__doc__

    def w4a16_linear(self, x, qweight, scales, qzeros, group_size, bias=None):
        if x.dtype not in HALF:
            return self.reference("w4a16_linear", "float32", x, qweight, scales, qzeros, group_size, bias)
        return self.w4a16(x, qweight, scales, qzeros, group_size, bias)
    w4a16_linear.__doc__ = Ops.w4a16_linear.__doc__

    # -- mixture of experts (§6) ----------------------------------------------------------------
    def moe_route(self, logits, top_k, *, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
                  correction_bias=None, routed_scaling=1.0):
        kw = dict(scoring=scoring, renormalize=renormalize, num_groups=num_groups, topk_groups=topk_groups,
                  correction_bias=correction_bias, routed_scaling=routed_scaling)
        out = self.moe.route(logits, top_k, **kw)
        return self.reference("moe_route", out, logits, top_k, **kw) if isinstance(out, str) else out
    moe_route.__doc__ = Ops.moe_route.__doc__

    def fused_moe(self, x, w13, w2, topk_weights, topk_ids, *, activation="silu", w13_bias=None, w2_bias=None):
        kw = dict(activation=activation, w13_bias=w13_bias, w2_bias=w2_bias)
        out = self.moe.experts(x, w13, w2, topk_weights, topk_ids, **kw)
        if isinstance(out, str):
            return self.reference("fused_moe", out, x, w13, w2, topk_weights, topk_ids, **kw)
        return out
    fused_moe.__doc__ = Ops.fused_moe.__doc__
