"""Emulated torch_npu norm / rotary / activation / KV write / quantized GEMM ops.

Each follows the section of vendors/ascend.md named in its docstring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import FLOAT16S, FLOATS, host_float, host_int, require, tensor
from ..graph_tape import vendor_op


def _rms(x, gamma, eps):
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * gamma.float()


@vendor_op("npu_rms_norm")
def npu_rms_norm(self, gamma, epsilon=1e-6):
    """§5: -> (y in x's dtype, rstd float32); gamma in x's dtype or float32."""
    op, x = "npu_rms_norm", self
    tensor(op, "x", x, FLOATS, contiguous=True)
    tensor(op, "gamma", gamma, (x.dtype, torch.float32), ndim=1)
    eps = host_float(op, "epsilon", epsilon)
    rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return _rms(x, gamma, eps).to(x.dtype), rstd


@vendor_op("npu_add_rms_norm")
def npu_add_rms_norm(x1, x2, gamma, epsilon=1e-6):
    """§5: x_sum = x1 + x2; -> (rmsnorm(x_sum) * gamma, rstd, x_sum)."""
    op = "npu_add_rms_norm"
    tensor(op, "x1", x1, FLOATS, contiguous=True)
    tensor(op, "x2", x2, (x1.dtype,), contiguous=True)
    require(x1.shape == x2.shape, op, "x1 and x2 shapes differ")
    tensor(op, "gamma", gamma, (x1.dtype, torch.float32), ndim=1)
    eps = host_float(op, "epsilon", epsilon)
    s = x1 + x2
    rstd = torch.rsqrt(s.float().pow(2).mean(-1, keepdim=True) + eps)
    return _rms(s, gamma, eps).to(x1.dtype), rstd, s


@vendor_op("npu_apply_rotary_pos_emb")
def npu_apply_rotary_pos_emb(query, key, cos, sin, layout="BSH", rotary_mode="half"):
    """§5: neox ("half") rotation of the whole head, D in {64, 128}, in place; returns (query, key).

    q/k BSND [B, S, N, D] (or TND 3-D); cos/sin [B, S, 1, D] in q's dtype.  Releases before
    op-plugin 7dee02b have no rotary_mode argument (the schema binding refuses it) and ignore
    layout: their kernel always runs layout 1 = BSND/BSH, half mode
    (op_plugin/ops/opapi/ApplyRotaryPosEmbNpuOpApi.cpp at 7b9ce1c and 3ec6c1f)."""
    op = "npu_apply_rotary_pos_emb"
    require(rotary_mode == "half", op, f"only rotary_mode='half' is supported, got {rotary_mode!r}")
    require(layout in ("BSND", "BSH", "TND"), op, f"layout {layout!r} not emulated")
    nd = 3 if layout == "TND" else 4
    tensor(op, "query", query, FLOAT16S, ndim=nd, contiguous=True)
    tensor(op, "key", key, (query.dtype,), ndim=nd, contiguous=True)
    for name, t in (("cos", cos), ("sin", sin)):
        tensor(op, name, t, (query.dtype,), ndim=nd)
    D = query.shape[-1]
    require(D in (64, 128) and key.shape[-1] == D and cos.shape[-1] == D, op, f"head dim must be 64 or 128, got {D}")
    require(cos.shape[-2] == 1 and cos.shape[:-2] == query.shape[:-2], op,
            f"cos/sin must be [B, S, 1, D] for q {tuple(query.shape)}, got {tuple(cos.shape)}")
    h = D // 2
    for x in (query, key):
        xf = x.float()
        rot = torch.cat((-xf[..., h:], xf[..., :h]), -1)
        x.copy_((xf * cos.float() + rot * sin.float()).to(x.dtype))
    return query, key


@vendor_op("npu_swiglu")
def npu_swiglu(self, dim=-1):
    """§5: silu(first half) * second half along dim; contiguous input only."""
    op, x = "npu_swiglu", self
    tensor(op, "x", x, FLOATS, contiguous=True)
    a, b = x.float().chunk(2, dim=dim)
    return (F.silu(a) * b).to(x.dtype)


@vendor_op("npu_dynamic_quant")
def npu_dynamic_quant(input, *, smooth_scales=None, group_index=None, dst_type=None):
    """§7: per-row symmetric int8: scale = rowmax|x| / 127 (float32, x.shape[:-1]), q = round(x / scale)."""
    op, x = "npu_dynamic_quant", input
    tensor(op, "x", x, FLOAT16S, contiguous=True)
    require(smooth_scales is None and group_index is None and dst_type in (None, torch.int8), op,
            "smooth_scales / group_index / non-int8 output not emulated")
    xf = x.float()
    scale = xf.abs().amax(-1) / 127.0
    q = torch.round(xf / scale.clamp(min=1e-30)[..., None]).clamp(-128, 127).to(torch.int8)
    return q, scale


@vendor_op("npu_quant_matmul")
def npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None):
    """§7: x1 int8 [M, K] @ x2 int8 [K, N] (exact) * scale [N] (* pertoken_scale [M]) (+ bias).

    Dtype combinations with a per-token scale, from op-plugin's npu_quant_matmul doc
    (A2/A3 table, codegen/templates/_op_plugin_docs.py, already at 7b9ce1c = v2.5.1-7.0.0):
    bfloat16 output with a float32/bfloat16 scale, float16 output with a float32 scale."""
    op = "npu_quant_matmul"
    tensor(op, "x1", x1, (torch.int8,), ndim=2)
    tensor(op, "x2", x2, (torch.int8,), ndim=2)
    tensor(op, "scale", scale, (torch.float32, torch.bfloat16), ndim=1)
    M, K = x1.shape
    require(x2.shape[0] == K and scale.shape[0] in (1, x2.shape[1]), op,
            f"shapes x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)}, scale {tuple(scale.shape)}")
    require(offset is None, op, "offset not emulated")
    acc = x1.double() @ x2.double()
    y = acc * scale.double()[None, :]
    if pertoken_scale is not None:
        tensor(op, "pertoken_scale", pertoken_scale, (torch.float32,), ndim=1)
        require(pertoken_scale.shape[0] == M, op, "pertoken_scale must be [M]")
        ok = output_dtype == torch.bfloat16 or (output_dtype == torch.float16 and scale.dtype == torch.float32)
        require(ok, op, f"per-token path: output {output_dtype} with a {scale.dtype} scale is not a documented pair")
        y = y * pertoken_scale.double()[:, None]
    else:
        require(output_dtype == torch.bfloat16, op, f"without pertoken_scale only bfloat16 output is emulated "
                                                    f"(float16 needs an int64 scale from npu_trans_quant_param)")
    if bias is not None:
        y = y + tensor(op, "bias", bias, (torch.float32, torch.bfloat16, torch.int32), ndim=1).double()
    return y.to(output_dtype)


def _unpack_int4(w: torch.Tensor) -> torch.Tensor:
    """int32 [K, N/8] -> int [K, N]: nibble j of word c = column 8c + j, signed 4-bit."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int64)
    nib = ((w.to(torch.int64)[:, :, None] & 0xFFFFFFFF) >> shifts) & 0xF
    nib = torch.where(nib >= 8, nib - 16, nib)
    return nib.reshape(w.shape[0], -1)


@vendor_op("npu_weight_quant_batchmatmul")
def npu_weight_quant_batchmatmul(x, weight, antiquant_scale, antiquant_offset=None, quant_scale=None,
                                 quant_offset=None, bias=None, antiquant_group_size=0, inner_precise=0):
    """§7: y = x @ ((w + offset) * scale) + bias; w int8 [K, N] or int4 packed in int32 [K, N/8];
    scale/offset per channel [N] / [1, N] or per group [ceil(K/g), N], in x's dtype."""
    op = "npu_weight_quant_batchmatmul"
    tensor(op, "x", x, FLOAT16S, ndim=2)
    tensor(op, "weight", weight, (torch.int8, torch.int32), ndim=2)
    require(quant_scale is None and quant_offset is None, op, "output quantization not emulated")
    M, K = x.shape
    w = weight.to(torch.int64) if weight.dtype == torch.int8 else _unpack_int4(weight)
    require(w.shape[0] == K, op, f"weight has {w.shape[0]} rows, x has K={K}")
    N = w.shape[1]
    tensor(op, "antiquant_scale", antiquant_scale, (x.dtype,))
    g = host_int(op, "antiquant_group_size", antiquant_group_size)

    def expand(t):
        t = t.reshape(-1, N) if t.dim() == 1 or t.shape[0] == 1 else t
        if t.shape[0] == 1:
            return t.expand(K, N)
        require(g > 0 and t.shape == (-(-K // g), N), op, f"per-group tensor {tuple(t.shape)} for K={K}, g={g}")
        return t.repeat_interleave(g, 0)[:K]

    s = expand(antiquant_scale).double()
    off = 0.0
    if antiquant_offset is not None:
        tensor(op, "antiquant_offset", antiquant_offset, (x.dtype,))
        off = expand(antiquant_offset).double()
    y = x.double() @ ((w.double() + off) * s)
    if bias is not None:
        y = y + tensor(op, "bias", bias, FLOATS, ndim=1).double()
    return y.to(x.dtype)
