"""Emulated mcoplib ops (the torch.ops._C / _C_cache_ops / _moe_C namespaces its
extensions register, and mcoplib.lmdeploy) as vendors/maca.md §4 gives them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from types import SimpleNamespace

from ..checks import FLOAT16S, FLOATS, host_float, host_int, require, tensor
from ..graph_tape import vendor_op


@vendor_op("_C.rms_norm")
def rms_norm(out, input, weight, epsilon):
    """§4: out = (x * rsqrt(mean(x^2) + eps)) cast to x's dtype, times weight (vLLM's kernel)."""
    op = "_C.rms_norm"
    tensor(op, "input", input, FLOATS, contiguous=True)
    tensor(op, "out", out, (input.dtype,), contiguous=True)
    tensor(op, "weight", weight, (input.dtype,), ndim=1)
    eps = host_float(op, "epsilon", epsilon)
    x = input.float()
    out.copy_((x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(input.dtype) * weight)


@vendor_op("_C.fused_add_rms_norm")
def fused_add_rms_norm(input, residual, weight, epsilon):
    """§4: in place: residual <- input + residual; input <- rmsnorm(residual) * weight."""
    op = "_C.fused_add_rms_norm"
    tensor(op, "input", input, FLOATS, contiguous=True)
    tensor(op, "residual", residual, (input.dtype,), contiguous=True)
    tensor(op, "weight", weight, (input.dtype,), ndim=1)
    eps = host_float(op, "epsilon", epsilon)
    residual.add_(input)
    x = residual.float()
    input.copy_((x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(input.dtype) * weight)


@vendor_op("_C.silu_and_mul")
def silu_and_mul(out, x):
    """§4: out[..., d] = silu(x[..., :d]) * x[..., d:] (gate first); out pre-allocated."""
    op = "_C.silu_and_mul"
    tensor(op, "x", x, FLOATS, contiguous=True)
    tensor(op, "out", out, (x.dtype,))
    d = x.shape[-1] // 2
    require(tuple(out.shape) == tuple(x.shape[:-1]) + (d,), op, "out must be x's shape with half the last dim")
    out.copy_((F.silu(x[..., :d].float()) * x[..., d:].float()).to(x.dtype))


@vendor_op("_C_cache_ops.reshape_and_cache_flash")
def reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale):
    """§4: key/value [T, Hkv, D] (token stride free, heads packed) into [nb, bs, Hkv, D] caches at
    int64 slots; negative slots skipped (inferred: dlinfer's graph padding); kv_cache_dtype "auto"."""
    op = "reshape_and_cache_flash"
    for name, t in (("key", key), ("value", value)):
        tensor(op, name, t, FLOAT16S + (torch.float32,), ndim=3)
        require(t.stride(-1) == 1 and t.stride(-2) == t.shape[-1], op, f"{name}: heads must be packed in a token")
    tensor(op, "key_cache", key_cache, (key.dtype,), ndim=4)
    tensor(op, "value_cache", value_cache, (key.dtype,), ndim=4)
    tensor(op, "slot_mapping", slot_mapping, (torch.int64,), ndim=1)
    require(kv_cache_dtype == "auto", op, "only kv_cache_dtype='auto' is emulated")
    tensor(op, "k_scale", k_scale, (torch.float32,))
    tensor(op, "v_scale", v_scale, (torch.float32,))
    nb, bs = key_cache.shape[:2]
    s = slot_mapping
    require(bool((s < nb * bs).all()), op, "slot beyond the cache")
    ok = s >= 0
    for x, c in ((key, key_cache), (value, value_cache)):
        c.view(nb * bs, *c.shape[2:])[s[ok]] = x[ok]


class _Schema:
    def __init__(self, names):
        self.arguments = [SimpleNamespace(name=n) for n in names]


def make_topk_softmax(nargs: int):
    names = ["topk_weights", "topk_ids", "token_expert_indices", "gating_output", "renormalize"][:nargs]

    @vendor_op("_moe_C.topk_softmax")
    def topk_softmax(topk_weights, topk_ids, token_expert_indices, gating_output, *rest):
        """§4: softmax(gating_output) in float32, top-k into the given buffers (weights f32,
        ids / source indices int32); open-source mcoplib's 5th argument renormalizes."""
        op = "topk_softmax"
        require(len(rest) == nargs - 4, op, f"this mcoplib's topk_softmax takes {nargs} arguments")
        tensor(op, "gating_output", gating_output, (torch.float32,), ndim=2)
        tensor(op, "topk_weights", topk_weights, (torch.float32,), ndim=2)
        tensor(op, "topk_ids", topk_ids, (torch.int32,), ndim=2)
        tensor(op, "token_expert_indices", token_expert_indices, (torch.int32,), ndim=2)
        N, k = topk_weights.shape
        w, ids = torch.softmax(gating_output, -1).topk(k, -1)
        if rest and rest[0]:
            w = w / w.sum(-1, keepdim=True)
        topk_weights.copy_(w)
        topk_ids.copy_(ids.to(torch.int32))
        token_expert_indices.copy_(torch.arange(N * k, dtype=torch.int32).view(k, N).t())

    topk_softmax.default = SimpleNamespace(_schema=_Schema(names))
    return topk_softmax


@vendor_op("lmdeploy_rotary_embedding")
def lmdeploy_rotary_embedding(positions, query, key, head_size, cos, sin, is_neox):
    """§4: in place on query [..., Hq*hs] and key [..., Hk*hs]; positions int64 [T]; cos/sin
    [max_pos, rot] in q's dtype, of which only the first rot/2 entries per row are read.
    Neox pairs (i, rot/2 + i); GPT-J pairs (2i, 2i+1); channels >= rot untouched."""
    op = "lmdeploy_rotary_embedding"
    tensor(op, "positions", positions, (torch.int64,), ndim=1)
    tensor(op, "query", query, FLOAT16S, contiguous=True)
    tensor(op, "key", key, (query.dtype,), contiguous=True)
    tensor(op, "cos", cos, (query.dtype,), ndim=2)
    tensor(op, "sin", sin, (query.dtype,), ndim=2)
    hs = host_int(op, "head_size", head_size)
    T = positions.shape[0]
    rot = cos.shape[-1]
    half = rot // 2
    require(query.shape[-1] % hs == 0 and key.shape[-1] % hs == 0 and rot <= hs, op, "head_size does not fit")
    c = cos[positions, :half].float()[:, None, :]
    s = sin[positions, :half].float()[:, None, :]
    for t in (query, key):
        x = t.view(T, -1, hs)
        if is_neox:
            a, b = x[..., :half].float(), x[..., half:rot].float()
            x[..., :half], x[..., half:rot] = (a * c - b * s).to(t.dtype), (b * c + a * s).to(t.dtype)
        else:
            a, b = x[..., 0:rot:2].float(), x[..., 1:rot:2].float()
            x[..., 0:rot:2], x[..., 1:rot:2] = (a * c - b * s).to(t.dtype), (b * c + a * s).to(t.dtype)
