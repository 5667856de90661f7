"""The suite can fail: each planted bug below (a one-line mistake a kernel author
could make) must make its conformance test fail, while the same test passes on
the unbroken reference.  If a check is weakened until it passes a planted bug,
this file says so."""
from __future__ import annotations

import copy

import pytest
import torch

from halinfer.core.attention import LayerKV
from halinfer.core.ops import Ops

from . import test_activation as act
from . import test_gemm as gemm
from . import test_moe as moe
from . import test_norm as norm
from . import test_norm_quant as nq
from . import test_paged_attention as pa
from . import test_rotary as rot
from . import test_sampling as smp
from . import test_store_kv as skv
from .providers import Provider

F32, F16 = torch.float32, torch.float16


def _provider(ops) -> Provider:
    return Provider("planted", ops=ops, kv_layout="NHD", block_sizes=(16, 32),
                    kv_cache_dtypes=("auto", "int8"), weight_quant=("awq", "w8a8"))


def _pick(cases, case_id):
    return next(c for c in cases if c.id == case_id)


# ---- the planted bugs ----------------------------------------------------------------

def store_kv_writes_negative_slots(self, k, v, kv, slot_mapping):
    for cache, x in ((kv.k, k), (kv.v, v)):       # -1 used as an index lands in the last slot
        if cache is not None and x is not None:
            cache.view(-1, *cache.shape[2:])[slot_mapping] = x.to(cache.dtype)


def store_kv_int8_forgets_scales(self, k, v, kv, slot_mapping):
    Ops.store_kv(self, k, v, LayerKV(kv.k, kv.v, kv.layout), slot_mapping)


def attention_reads_one_token_past_the_end(self, q, kv, meta, **kw):
    m = copy.copy(meta)
    m.seq_lens = meta.seq_lens + 1
    return Ops.paged_attention(self, q, kv, m, **kw)


def attention_maps_query_heads_to_the_wrong_kv_head(self, q, kv, meta, **kw):
    d = 2 if kv.layout == "NHD" else 1
    f = (lambda t: None if t is None else t.flip(d))
    return Ops.paged_attention(self, q, LayerKV(f(kv.k), f(kv.v), kv.layout, f(kv.k_scale), f(kv.v_scale)), meta, **kw)


def attention_ignores_the_window(self, q, kv, meta, **kw):
    return Ops.paged_attention(self, q, kv, meta, **dict(kw, sliding_window=None))


def attention_ignores_sinks(self, q, kv, meta, **kw):
    return Ops.paged_attention(self, q, kv, meta, **dict(kw, sinks=None))


def attention_alibi_sign_flipped(self, q, kv, meta, **kw):
    s = kw.get("alibi_slopes")
    return Ops.paged_attention(self, q, kv, meta, **dict(kw, alibi_slopes=None if s is None else -s))


def rotary_always_neox(self, q, k, positions, cache, is_neox=True):
    return Ops.rotary(self, q, k, positions, cache, True)


def rms_norm_drops_the_residual(self, x, weight, eps, residual=None):
    y = Ops.rms_norm(self, x, weight, eps)
    return y if residual is None else (y, x)


def silu_on_the_wrong_half(self, x):
    d = x.shape[-1] // 2
    return Ops.silu_and_mul(self, torch.cat((x[..., d:], x[..., :d]), -1))


def gelu_ignores_tanh(self, x, approximate="none"):
    return Ops.gelu_and_mul(self, x)


def awq_plain_nibble_order(self, x, qweight, scales, qzeros, group_size, bias=None):
    def unpack(p):
        return ((p[:, :, None] >> torch.arange(0, 32, 4, dtype=torch.int32)) & 0xF).reshape(p.shape[0], -1)
    w = (unpack(qweight) - unpack(qzeros).repeat_interleave(group_size, 0)).float() * \
        scales.float().repeat_interleave(group_size, 0)
    y = x.float() @ w + (0 if bias is None else bias.float())
    return y.to(x.dtype)


def quant_int8_per_tensor(self, x):
    s = x.float().abs().amax() / 127
    return torch.round(x.float() / s).clamp(-128, 127).to(torch.int8), s.expand(x.shape[0]).clone()


def w8a8_one_scale_for_all_columns(self, x, weight, weight_scale, bias=None):
    return Ops.w8a8_linear(self, x, weight, weight_scale.mean().expand_as(weight_scale), bias)


def route_ignores_groups(self, logits, top_k, **kw):
    kw.pop("num_groups", None)
    kw.pop("topk_groups", None)
    return Ops.moe_route(self, logits, top_k, **kw)


def route_weights_include_the_bias(self, logits, top_k, **kw):
    b = kw.get("correction_bias")
    if b is None:
        return Ops.moe_route(self, logits, top_k, **kw)
    w, ids = Ops.moe_route(self, logits, top_k, **kw)
    return w + b.float()[ids.long()], ids


def fused_moe_drops_the_down_bias(self, x, w13, w2, tw, tid, **kw):
    return Ops.fused_moe(self, x, w13, w2, tw, tid, **dict(kw, w2_bias=None))


def penalties_presence_counts_the_prompt(self, logits, prompt_mask, counts, rep, pres, freq):
    Ops.apply_penalties(self, logits, prompt_mask, counts, rep, pres, freq)
    logits -= pres[:, None] * (prompt_mask & (counts == 0)).float()
    return logits


def sample_ignores_top_k(self, logits, st):
    return Ops.sample(self, logits, _replace(st, any_top_k=False))


def sample_ignores_temperature(self, logits, st):
    return Ops.sample(self, logits * st.temperature[:, None].clamp(min=1e-6), st)


def sample_from_a_batch_wide_generator(self, logits, st):
    g = torch.Generator().manual_seed(int(st.seeds[0]))          # row draws depend on the batch
    u = torch.rand(logits.shape, generator=g).clamp(1e-9, 1 - 1e-9)
    drawn = (logits / st.temperature.clamp(min=1e-6)[:, None] - torch.log(-torch.log(u))).argmax(-1)
    return torch.where(st.temperature > 0, drawn, logits.argmax(-1))


def _replace(st, **kw):
    new = copy.copy(st)
    for k, v in kw.items():
        setattr(new, k, v)
    return new


def rms_norm_quant_skips_the_dtype_rounding(self, x, weight, eps, quant, residual=None):
    from halinfer.core.ops.norm_quant import quantize_acts

    s = x + residual if residual is not None else x
    xf = s.float()
    y = weight.float() * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps))   # never rounded to x's dtype
    qa = quantize_acts(self, y, quant)
    qa.dtype = x.dtype
    return (qa, s) if residual is not None else qa


def rms_norm_quant_one_fp8_group_per_row(self, x, weight, eps, quant, residual=None):
    out = Ops.rms_norm_quant(self, x, weight, eps, type(quant)("fp8", x.shape[-1]), residual)
    qa = out[0] if residual is not None else out
    qa.spec = quant
    return out


# (name, op, planted bug, test function, its cases, case id, dtype)
MUTANTS = [
    ("store_kv", store_kv_writes_negative_slots, skv.test_store_kv, skv._cases(), "T7_hk2_d80_dv80_bs16_neg", F32),
    ("store_kv", store_kv_int8_forgets_scales, skv.test_store_kv, skv._cases(), "T7_hk2_d80_dv80_bs16_neg_int8", F32),
    ("paged_attention", attention_reads_one_token_past_the_end, pa.test_paged_attention, pa.PA_CASES,
     "decode_gqa8_d64", F32),
    ("paged_attention", attention_maps_query_heads_to_the_wrong_kv_head, pa.test_paged_attention, pa.PA_CASES,
     "prefix_gqa4_d128", F16),
    ("paged_attention", attention_ignores_the_window, pa.test_paged_attention, pa.PA_CASES, "window17", F16),
    ("paged_attention", attention_ignores_sinks, pa.test_paged_attention, pa.PA_CASES, "sinks", F16),
    ("paged_attention", attention_alibi_sign_flipped, pa.test_paged_attention, pa.PA_CASES, "alibi_h12", F16),
    ("rotary", rotary_always_neox, rot.test_rotary, rot.ROTARY_CASES, "T13_hq6_hk2_d80_rot32_gptj_strided", F16),
    ("rms_norm", rms_norm_drops_the_residual, norm.test_rms_norm, norm.NORM_CASES, "T7_H67_res", F32),
    ("rms_norm_quant", rms_norm_quant_skips_the_dtype_rounding, nq.test_rms_norm_quant, nq.NQ_CASES,
     "T7_H67_int8_res", F16),
    ("rms_norm_quant", rms_norm_quant_one_fp8_group_per_row, nq.test_rms_norm_quant, nq.NQ_CASES,
     "T7_H300_fp8_g128_res", F16),
    ("silu_and_mul", silu_on_the_wrong_half, act.test_silu_and_mul, act.ACT_CASES, "7x67", F16),
    ("gelu_and_mul", gelu_ignores_tanh, act.test_gelu_and_mul, act.GELU_CASES, "7x67_tanh", F32),
    ("w4a16_linear", awq_plain_nibble_order, gemm.test_w4a16_linear, gemm.W4_CASES, "T7_K256_N72_g64_bias", F16),
    ("quant_per_token_int8", quant_int8_per_tensor, gemm.test_quant_per_token_int8, gemm.Q8_CASES, "T7_K67_zero_row",
     F32),
    ("w8a8_linear", w8a8_one_scale_for_all_columns, gemm.test_w8a8_linear, gemm.W8_CASES, "T7_K67_N33_bias", F16),
    ("moe_route", route_ignores_groups, moe.test_moe_route, moe.ROUTE_CASES, "dsv2_grouped_T37", F32),
    ("moe_route", route_weights_include_the_bias, moe.test_moe_route, moe.ROUTE_CASES, "glm_sigmoid_bias_T37", F32),
    ("fused_moe", fused_moe_drops_the_down_bias, moe.test_fused_moe, moe.MOE_CASES, "T7_H67_I48_E8_k2_silu_bias",
     F16),
    ("apply_penalties", penalties_presence_counts_the_prompt, smp.test_apply_penalties, smp.PEN_CASES, "B5_V1000",
     F32),
    ("sample", sample_ignores_top_k, smp.test_sample_frequencies_follow_filtered_softmax, smp.FREQ_CASES,
     "topk3_offsets", F32),
    ("sample", sample_ignores_temperature, smp.test_sample_frequencies_follow_filtered_softmax, smp.FREQ_CASES,
     "t0.6_seeds", F32),
    ("sample", sample_from_a_batch_wide_generator, smp.test_sample_draw_depends_only_on_seed_and_offset,
     smp.SAMPLE_CASES, "B9_V1000", F32),
]


@pytest.mark.parametrize("op,bug,test,cases,case_id,dtype", MUTANTS, ids=[m[1].__name__ for m in MUTANTS])
def test_the_suite_catches_a_planted_bug(op, bug, test, cases, case_id, dtype):
    c = _pick(cases, case_id)
    test(_provider(Ops()), dtype, c, torch.Generator().manual_seed(0))          # control: the reference passes
    broken = type("Planted", (Ops,), {op: bug})()
    with pytest.raises(AssertionError):
        test(_provider(broken), dtype, c, torch.Generator().manual_seed(0))
