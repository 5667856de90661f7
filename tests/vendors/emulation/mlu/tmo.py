"""Emulated torch_mlu_ops (``tmo``): the calls the Cambricon plugin makes, with the
semantics of vendors/camb.md (section named per op).  Positional order follows
the prefixes dlinfer uses; later keywords only where the fact sheet lists them.
Each emulated release exports the names tmo_exports.json lists for it (1.12.1: its
exact ``__all__``; 1.5.0: the names dlinfer calls with it pinned).
"""
from __future__ import annotations

import json
import os
import re
import types

import torch
import torch.nn.functional as F

from ..attn_math import attend_one, gather_paged
from ..checks import FLOAT16S, FLOATS, host_float, host_int, require, tensor
from ..graph_tape import vendor_op


def _rms(x, gamma, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * gamma.float()).to(x.dtype)


@vendor_op("fused_rms_norm")
def fused_rms_norm(x, residual, gamma, beta, bias, eps, store_output_before_norm, quant_scale=None, out=None,
                   dynamic_quant=False):
    """§5: x1 = x (+ bias) (+ residual); y = rmsnorm(x1) * gamma (+ beta); -> y or (y, x1)."""
    op = "fused_rms_norm"
    tensor(op, "x", x, FLOATS, ndim=(2, 3), contiguous=True)
    require(beta is None and bias is None and quant_scale is None and out is None and not dynamic_quant, op,
            "beta / bias / quantization / out not emulated")
    tensor(op, "gamma", gamma, (x.dtype,), ndim=1)
    e = host_float(op, "eps", eps)
    x1 = x
    if residual is not None:
        x1 = x + tensor(op, "residual", residual, (x.dtype,), contiguous=True)
    y = _rms(x1, gamma, e)
    return (y, x1) if store_output_before_norm else y


@vendor_op("apply_rotary")
def apply_rotary(input, sin_cache, cos_cache, position_ids, cu_seqlens, interleaved, discrete, dynamic_ntk,
                 max_seqlen, output=None, is_inverse=False):
    """§5: out = rotate(x) * sin + x * cos on the first rot_dim = sin.shape[-1] channels, in
    place (returns input).  Note the order: sin before cos.  Non-interleaved: rotate = cat(-x2, x1)
    over the rotated part; interleaved: pairs (-x[2i+1], x[2i]).  Pad mode input [B, T, H, D]:
    without position_ids token t of each batch uses row t; discrete=True: row position_ids[t]."""
    op = "apply_rotary"
    tensor(op, "input", input, FLOAT16S + (torch.float32,), ndim=4, contiguous=True)
    for name, t in (("sin_cache", sin_cache), ("cos_cache", cos_cache)):
        tensor(op, name, t, (input.dtype, torch.float32), ndim=2)
    require(cu_seqlens is None and not dynamic_ntk and output is None and not is_inverse, op,
            "packed mode / dynamic ntk / output / inverse not emulated")
    B, T, H, D = input.shape
    rot = sin_cache.shape[-1]
    require(2 <= D <= 256 and rot % 2 == 0 and 2 <= rot <= D, op, f"head_size {D}, rot_dim {rot}")
    require(host_int(op, "max_seqlen", max_seqlen) >= T, op, "max_seqlen smaller than the sequence")
    if discrete:
        tensor(op, "position_ids", position_ids, (torch.int32, torch.int64), ndim=1)
        rows = position_ids.long().view(B, T)
    else:
        require(position_ids is None, op, "per-batch start positions not emulated")
        rows = torch.arange(T).expand(B, T)
    sin, cos = sin_cache.float()[rows][:, :, None, :], cos_cache.float()[rows][:, :, None, :]
    x = input[..., :rot].float()
    if interleaved:
        rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), -1).flatten(-2)
    else:
        rotated = torch.cat((-x[..., rot // 2:], x[..., : rot // 2]), -1)
    input[..., :rot] = (rotated * sin + x * cos).to(input.dtype)
    return input


@vendor_op("active")
def active(input, act_mode, is_gated, active_coef=1.0):
    """§5: gated: act(x[..., :C/2]) * x[..., C/2:] (gate first); act_mode 'silu' or 'gelu' here."""
    op = "active"
    tensor(op, "input", input, FLOATS, contiguous=True)
    fn = {"silu": F.silu, "gelu": F.gelu}.get(act_mode)
    require(fn is not None, op, f"act_mode {act_mode!r} not emulated")
    x = input.float()
    if is_gated:
        a, b = x.chunk(2, -1)
        return (fn(a) * b).to(input.dtype)
    return fn(x).to(input.dtype)


@vendor_op("reshape_paged_cache")
def reshape_paged_cache(k, v, k_cache, v_cache, slot_mapping, direction=False):
    """§4: k/v [T, Hkv, D] into HND caches [nb, Hkv, bs, D] at int32 slots; negative skipped; in place."""
    op = "reshape_paged_cache"
    require(not direction, op, "direction=True (gather) not emulated")
    tensor(op, "k", k, FLOATS, ndim=3)
    tensor(op, "v", v, (k.dtype,), ndim=3)
    tensor(op, "k_cache", k_cache, (k.dtype,), ndim=4)
    tensor(op, "v_cache", v_cache, (k.dtype,), ndim=4)
    tensor(op, "slot_mapping", slot_mapping, (torch.int32,), ndim=1)
    nb, hk, bs, d = k_cache.shape
    require(k.shape[1:] == (hk, d) and v.shape[1:] == (v_cache.shape[1], v_cache.shape[3]), op,
            f"k {tuple(k.shape)} does not fit HND cache {tuple(k_cache.shape)}")
    s = slot_mapping.long()
    require(bool((s < nb * bs).all()), op, "slot beyond the cache")
    ok = s >= 0
    s = s[ok]
    for x, c in ((k, k_cache), (v, v_cache)):
        c[s // bs, :, s % bs] = x[ok]
    return k_cache, v_cache


def _lens(op, name, cu):
    tensor(op, name, cu, (torch.int32,), ndim=1)
    c = cu.tolist()
    require(c[0] == 0 and all(b >= a for a, b in zip(c, c[1:])), op, f"{name} must be cumulative from 0")
    return [b - a for a, b in zip(c, c[1:])], c


@vendor_op("flash_attention")
def flash_attention(q, k, v, out, cu_seq_lens_q, cu_seq_lens_kv, alibi_slope, attn_bias, max_seq_len_q,
                    max_seq_len_kv, softmax_scale, is_causal, window_size_left=-1, window_size_right=-1,
                    compute_dtype=torch.float, return_lse=False, block_tables=None, k_quant_scale=None,
                    v_quant_scale=None):
    """§3: packed (varlen) attention, optionally over a paged HND cache (block size 16 only).
    Causal is bottom-right aligned (inferred: dlinfer uses it for prefix caching); the
    left window keeps window_size_left + 1 keys.  Returns out (a new tensor if out is None)."""
    op = "flash_attention"
    tensor(op, "q", q, FLOAT16S, ndim=3)
    require(alibi_slope is None and attn_bias is None and k_quant_scale is None and v_quant_scale is None, op,
            "alibi / attn_bias / quantized caches not emulated")
    require(window_size_right == -1 and not return_lse, op, "right window / lse not emulated")
    require(compute_dtype in (torch.float, q.dtype), op, f"compute_dtype {compute_dtype}")
    ql, qc = _lens(op, "cu_seq_lens_q", cu_seq_lens_q)
    kl, kc = _lens(op, "cu_seq_lens_kv", cu_seq_lens_kv)
    require(len(ql) == len(kl) and qc[-1] == q.shape[0], op, "cu_seq_lens_q does not describe q")
    mq, mk = host_int(op, "max_seq_len_q", max_seq_len_q), host_int(op, "max_seq_len_kv", max_seq_len_kv)
    require(max(ql) <= mq and max(kl) <= mk, op,
            f"max_seq_len_q/kv ({mq}, {mk}) below the longest sequence ({max(ql)}, {max(kl)})")
    scale = host_float(op, "softmax_scale", softmax_scale)
    left = host_int(op, "window_size_left", window_size_left)
    hq = q.shape[1]
    if block_tables is not None:
        tensor(op, "block_tables", block_tables, (torch.int32,), ndim=2)
        tensor(op, "k", k, (q.dtype,), ndim=4)
        tensor(op, "v", v, (q.dtype,), ndim=4)
        require(k.shape[2] == 16, op, f"paged mode: block_size only 16, got {k.shape[2]}")
    else:
        tensor(op, "k", k, (q.dtype,), ndim=3)
        tensor(op, "v", v, (q.dtype,), ndim=3)
    dv = v.shape[-1]
    if out is None:
        out = torch.empty(q.shape[0], hq, dv, dtype=q.dtype, device=q.device)
    else:
        tensor(op, "out", out, (q.dtype,), ndim=3)
        require(out.data_ptr() != q.data_ptr(), op, "out must not alias q (not in-place safe, §10)")
    for b, (m, n) in enumerate(zip(ql, kl)):
        if m == 0:
            continue
        if block_tables is not None:
            kk = gather_paged(k, block_tables[b], n, 16, "HND")
            vv = gather_paged(v, block_tables[b], n, 16, "HND")
        else:
            kk, vv = k[kc[b]:kc[b] + n], v[kc[b]:kc[b] + n]
        out[qc[b]:qc[b] + m] = attend_one(q[qc[b]:qc[b] + m], kk, vv, scale, causal=bool(is_causal),
                                          window_left=left).to(out.dtype)
    return out


@vendor_op("single_query_cached_kv_attn")
def single_query_cached_kv_attn(q, k_cache, v_cache, out, block_tables, context_lens, k_cache_quant_scale,
                                v_cache_quant_scale, alibi_slopes, max_context_len, windows_size_left,
                                windows_size_right, softmax_scale):
    """§3: decode over HND caches; q/out [B, seq_q, Hq, D]; context_lens int32 on the device (full
    KV length); max_context_len <= 0 means unknown, else it bounds every length; out in place."""
    op = "single_query_cached_kv_attn"
    tensor(op, "q", q, FLOAT16S, ndim=4)
    tensor(op, "k_cache", k_cache, (q.dtype,), ndim=4)
    tensor(op, "v_cache", v_cache, (q.dtype,), ndim=4)
    tensor(op, "out", out, (q.dtype,), ndim=4)
    tensor(op, "block_tables", block_tables, (torch.int32,), ndim=2)
    tensor(op, "context_lens", context_lens, (torch.int32,), ndim=1)
    require(k_cache_quant_scale is None and v_cache_quant_scale is None and alibi_slopes is None, op,
            "quantized caches / alibi not emulated")
    require(host_int(op, "windows_size_right", windows_size_right) == -1, op, "windows_size_right must be -1")
    B, sq, hq, d = q.shape
    nb, hk, bs, kd = k_cache.shape
    require(bs in (1, 2, 4, 8, 16, 32, 64), op, f"block_size {bs} not in 1..64 powers of two")
    require(out.shape == (B, sq, hq, v_cache.shape[-1]) and kd == d and hq % hk == 0, op, "shapes do not match")
    limit = 256 if q.dtype == torch.bfloat16 else 128
    require(sq * (hq // hk) <= limit, op, f"seq_q * (Hq/Hkv) = {sq * hq // hk} > {limit}: split into head groups")
    lens = context_lens.tolist()
    mx = host_int(op, "max_context_len", max_context_len)
    require(mx <= 0 or max(lens) <= mx, op, f"max_context_len {mx} below a context length ({max(lens)})")
    scale = host_float(op, "softmax_scale", softmax_scale)
    left = host_int(op, "windows_size_left", windows_size_left)
    for b in range(B):
        kk = gather_paged(k_cache, block_tables[b], lens[b], bs, "HND")
        vv = gather_paged(v_cache, block_tables[b], lens[b], bs, "HND")
        out[b] = attend_one(q[b], kk, vv, scale, causal=True, window_left=left).to(out.dtype)
    return None


@vendor_op("matmul")
def matmul(a, b, bias=None, c=None, act_mode="none", alpha=1.0, beta=0.0):
    """§6: alpha * a @ b^T (+ beta * c) + bias; a [M, K] and b [N, K], 2-D only."""
    op = "matmul"
    tensor(op, "a", a, FLOATS, ndim=2)
    tensor(op, "b", b, (a.dtype,), ndim=2)
    require(c is None and act_mode == "none", op, "c / activation not emulated")
    require(a.shape[1] == b.shape[1], op, f"K mismatch {tuple(a.shape)} x {tuple(b.shape)}^T")
    y = host_float(op, "alpha", alpha) * (a.float() @ b.float().t())
    if bias is not None:
        y = y + tensor(op, "bias", bias, (a.dtype, torch.float32), ndim=1).float()
    return y.to(a.dtype)


@vendor_op("per_token_smooth_quantize")
def per_token_smooth_quantize(x, smooth, zero=None, token_count=None, act_mode="none", active_coef=1.0,
                              is_gated=False):
    """§6: scale = max|x * smooth| / 127 per token (float32), q = round(x * smooth / scale) int8."""
    op = "per_token_smooth_quantize"
    tensor(op, "x", x, FLOAT16S, contiguous=True)
    tensor(op, "smooth", smooth, (torch.float32,), ndim=1)
    require(smooth.shape[0] == x.shape[-1], op, "smooth must have one entry per channel")
    require(zero is None and token_count is None and act_mode == "none" and not is_gated, op,
            "zero / token_count / activation not emulated")
    xs = x.float() * smooth
    scale = xs.abs().amax(-1) / 127.0
    q = torch.round(xs / scale.clamp(min=1e-30)[..., None]).clamp(-128, 127).to(torch.int8)
    return q, scale


@vendor_op("smooth_quant_matmul")
def smooth_quant_matmul(a, a_scale, b, b_scale, dtype, bias=None, c=None, act_mode="none", alpha=1.0, beta=1.0,
                        output=None):
    """§6: (a @ b^T) * a_scale[:, None] * b_scale[None, :] (+ bias), in dtype; a [M, K], b [N, K] int8."""
    op = "smooth_quant_matmul"
    tensor(op, "a", a, (torch.int8,), ndim=2)
    tensor(op, "b", b, (torch.int8,), ndim=2)
    tensor(op, "a_scale", a_scale, (torch.float32,), ndim=1)
    tensor(op, "b_scale", b_scale, (torch.float32,), ndim=1)
    require(dtype in FLOAT16S and c is None and act_mode == "none" and output is None, op, "options not emulated")
    y = (a.double() @ b.double().t()) * a_scale.double()[:, None] * b_scale.double()[None, :]
    if bias is not None:
        y = y + tensor(op, "bias", bias, (dtype, torch.float32), ndim=1).double()
    return y.to(dtype)


@vendor_op("scaled_quantize")
def scaled_quantize(x, smooth=None, quant_type=torch.int8, quant_mode="dynamic_per_token"):
    """W8A8 activation quant of TMO 1.12.1 (docs/vendors.md, Cambricon): per-token dynamic symmetric
    int8 (inferred: callers quantize activations with it and nothing else), scale = max|x| / 127."""
    op = "scaled_quantize"
    tensor(op, "x", x, FLOAT16S, contiguous=True)
    require(smooth is None and quant_type == torch.int8 and quant_mode == "dynamic_per_token", op,
            "emulation covers scaled_quantize(x): int8, dynamic per token, no smooth vector")
    scale = x.float().abs().amax(-1) / 127.0
    q = torch.round(x.float() / scale.clamp(min=1e-30)[..., None]).clamp(-128, 127).to(torch.int8)
    return q, scale


@vendor_op("scaled_matmul")
def scaled_matmul(a, b, a_scale, b_scale, output_dtype=None, bias=None, c=None, act_mode="none", quant_bit_size=8,
                  alpha=1.0, beta=1.0, use_hp_active=False, a_quant_bit_size=8, a_calib=None, b_calib=None):
    """(a @ b^T) * a_scale[:, None] * b_scale[None, :] (+ bias) in output_dtype; a [M, K], b [N, K] int8.
    Parameter order from vllm-mlu's call, names from LightX2V's (docs/vendors.md); semantics inferred."""
    op = "scaled_matmul"
    tensor(op, "a", a, (torch.int8,), ndim=2)
    tensor(op, "b", b, (torch.int8,), ndim=2)
    tensor(op, "a_scale", a_scale, (torch.float32,), ndim=1)
    tensor(op, "b_scale", b_scale, (torch.float32,), ndim=1)
    require(output_dtype in FLOAT16S and c is None and act_mode == "none" and quant_bit_size == 8
            and a_quant_bit_size == 8 and a_calib is None and b_calib is None, op, "options not emulated")
    y = (a.double() @ b.double().t()) * a_scale.double()[:, None] * b_scale.double()[None, :]
    if bias is not None:
        y = y + tensor(op, "bias", bias, (output_dtype, torch.float32), ndim=1).double()
    return y.to(output_dtype)


@vendor_op("moe_softmax_topk")
def moe_softmax_topk(input, topk, normalize=False, num_expert_group=-1, topk_group=0):
    """§7: softmax in float32, then top-k -> (weights float32 [N, k], ids int32 [N, k])."""
    op = "moe_softmax_topk"
    tensor(op, "input", input, FLOATS, ndim=2)
    require(num_expert_group == -1, op, "grouped top-k not emulated")
    w, ids = torch.softmax(input.float(), -1).topk(host_int(op, "topk", topk), -1)
    if normalize:
        w = w / w.sum(-1, keepdim=True)
    return w, ids.to(torch.int32)


@vendor_op("moe_gen_idx")
def moe_gen_idx(expert_id, expert_num):
    """§7 (inferred): expand_idx [N*k] = source token of each expert-sorted copy; combine_idx [N*k] =
    for flat (t, j) the row of its copy; token_count [E] int32; cusum_token_count [E+1] int32."""
    op = "moe_gen_idx"
    tensor(op, "expert_id", expert_id, (torch.int32,), ndim=2)
    E = host_int(op, "expert_num", expert_num)
    N, k = expert_id.shape
    flat = expert_id.reshape(-1).long()
    order = torch.sort(flat, stable=True).indices
    combine = torch.empty_like(order)
    combine[order] = torch.arange(N * k, device=flat.device)
    counts = torch.bincount(flat, minlength=E)
    cusum = torch.zeros(E + 1, dtype=torch.int64, device=flat.device)
    cusum[1:] = counts.cumsum(0)
    return (order // k).to(torch.int32), combine.to(torch.int32), counts.to(torch.int32), cusum.to(torch.int32)


@vendor_op("moe_expand_input")
def moe_expand_input(x, expand_idx, cusum_token_count, start_expert_id=0, expert_size=None):
    """§7: x[expand_idx] (all experts in range here)."""
    op = "moe_expand_input"
    tensor(op, "x", x, FLOATS, ndim=2)
    tensor(op, "expand_idx", expand_idx, (torch.int32,), ndim=1)
    tensor(op, "cusum_token_count", cusum_token_count, (torch.int32,), ndim=1)
    require(start_expert_id == 0 and expert_size == cusum_token_count.shape[0] - 1, op, "expert ranges not emulated")
    return x[expand_idx.long()]


@vendor_op("group_gemm")
def group_gemm(a, b, m_list, expand_idx=None, c=None, alpha=None, beta=None, max_in_group_list=None):
    """§7: rows of a split by m_list (int32 counts) over experts; group e times b[e]^T ([E, n, k])."""
    op = "group_gemm"
    tensor(op, "a", a, FLOATS, ndim=2)                   # may be a strided view (dlinfer's moe_active slice)
    tensor(op, "b", b, (a.dtype,), ndim=3)
    tensor(op, "m_list", m_list, (torch.int32,), ndim=1)
    require(expand_idx is None and c is None and alpha is None and beta is None, op, "fused options not emulated")
    counts = m_list.tolist()
    require(sum(counts) == a.shape[0] and len(counts) == b.shape[0] and a.shape[1] == b.shape[2], op,
            f"a {tuple(a.shape)}, b {tuple(b.shape)}, m_list sum {sum(counts)}")
    require(max_in_group_list is None or max(counts) <= host_int(op, "max_in_group_list", max_in_group_list), op,
            "a group is larger than max_in_group_list")
    out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
    s = 0
    for e, n in enumerate(counts):
        out[s:s + n] = (a[s:s + n].float() @ b[e].float().t()).to(a.dtype)
        s += n
    return out


@vendor_op("moe_active")
def moe_active(input, act_mode, is_gated, output=None, bias=None, cusum_token_count=None, start_expert_id=0,
               expert_size=None):
    """§7: gated activation of each row written into ``output``'s storage (its first half holds the
    result: dlinfer slices [:, :I]; the rest is left as garbage here); returns output."""
    op = "moe_active"
    tensor(op, "input", input, FLOATS, ndim=2)
    require(is_gated and act_mode == "silu" and bias is None, op, "emulation covers gated silu without bias")
    require(output is not None and output.shape == input.shape, op, "output must be a buffer like input")
    inter = input.shape[1] // 2
    act = (F.silu(input[:, :inter].float()) * input[:, inter:].float()).to(input.dtype)
    output[:, :inter] = act
    output[:, inter:] = float("nan")
    return output


@vendor_op("moe_combine_result")
def moe_combine_result(input, reduce_weight, gather_ids, residual, cusum_token_count, start_expert_id, expert_size,
                       bias):
    """§7: out[t] = sum_j input[gather_ids[t*k + j]] * reduce_weight[t, j] (+ residual); float32 weights."""
    op = "moe_combine_result"
    tensor(op, "input", input, FLOATS, ndim=2)
    tensor(op, "reduce_weight", reduce_weight, (torch.float32,), ndim=2)
    tensor(op, "gather_ids", gather_ids, (torch.int32,), ndim=1)
    require(residual is None and bias is None, op, "residual / bias not emulated")
    N, k = reduce_weight.shape
    rows = input[gather_ids.long()].float().view(N, k, -1)
    return (rows * reduce_weight[:, :, None]).sum(1).to(input.dtype)


IMPLS = {f.emulated_name: f for f in (
    fused_rms_norm, apply_rotary, active, reshape_paged_cache, flash_attention, single_query_cached_kv_attn, matmul,
    per_token_smooth_quantize, smooth_quant_matmul, scaled_quantize, scaled_matmul, moe_softmax_topk, moe_gen_idx,
    moe_expand_input, group_gemm, moe_active, moe_combine_result)}
with open(os.path.join(os.path.dirname(__file__), "tmo_exports.json")) as _f:
    EXPORTS = json.load(_f)


def exports_of(version: str) -> list[str]:
    """The names torch_mlu_ops <version> exports (tmo_exports.json), the nearest known release at or below it."""
    v = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    known = sorted(EXPORTS, key=lambda k: tuple(map(int, k.split("."))))
    below = [k for k in known if tuple(map(int, k.split("."))) <= v] or known[:1]
    return EXPORTS[below[-1]]["exports"]


def _not_emulated(name):
    def fail(*a, **k):
        raise NotImplementedError(f"emulation: torch_mlu_ops.{name} exists in this release but is not emulated")
    return fail


def build(cfg) -> types.ModuleType:
    """torch_mlu_ops of cfg.tmo_version, exporting exactly the names its release exports."""
    m = types.ModuleType("torch_mlu_ops")
    m.__version__ = cfg.tmo_version
    for name in exports_of(cfg.tmo_version):
        setattr(m, name, IMPLS.get(name) or _not_emulated(name))
    return m
