"""Emulated torch_npu MoE ops (vendors/ascend.md §6)."""
from __future__ import annotations

import torch

from ..checks import FLOATS, host_int, host_ints, require, tensor
from ..graph_tape import vendor_op


@vendor_op("npu_moe_gating_top_k_softmax")
def npu_moe_gating_top_k_softmax(x, finished=None, k=1):
    """§6: top-k of softmax(x) -> (y in x's dtype, expert_idx int32, row_idx int32 = k-major ids)."""
    op = "npu_moe_gating_top_k_softmax"
    tensor(op, "x", x, FLOATS, ndim=2)
    require(finished is None, op, "finished not emulated")
    k = host_int(op, "k", k)
    p = torch.softmax(x.float(), -1)
    y, idx = p.topk(k, dim=-1)
    N = x.shape[0]
    row = torch.arange(N * k, dtype=torch.int32, device=x.device).reshape(k, N).t().contiguous()
    return y.to(x.dtype), idx.to(torch.int32), row


@vendor_op("npu_moe_init_routing_v2")
def npu_moe_init_routing_v2(x, expert_idx, *, scale=None, offset=None, active_num=-1, expert_capacity=-1,
                            expert_num=-1, drop_pad_mode=0, expert_tokens_num_type=0,
                            expert_tokens_num_flag=False, quant_mode=-1, active_expert_range=None,
                            row_idx_type=0):
    """§6: stable-sort flat ids r = t*K + k by expert: expanded_x[i] = x[sorted_r[i] // K],
    expanded_row_idx[r] = i (int32), expert_tokens int64 counts (type 1) or cumsum (type 0)."""
    op = "npu_moe_init_routing_v2"
    tensor(op, "x", x, FLOATS, ndim=2)
    tensor(op, "expert_idx", expert_idx, (torch.int32,), ndim=2)
    require(scale is None and offset is None and quant_mode == -1 and drop_pad_mode == 0 and row_idx_type == 0,
            op, "quantization / drop-pad / row_idx_type 1 not emulated")
    N, K = expert_idx.shape
    E = host_int(op, "expert_num", expert_num)
    require(host_int(op, "active_num", active_num) == N * K, op, "emulation covers active_num = N * K")
    rng = host_ints(op, "active_expert_range", active_expert_range, length=2)
    require(rng == [0, E], op, "emulation covers active_expert_range = [0, expert_num]")
    flat = expert_idx.reshape(-1).long()
    require(bool(((flat >= 0) & (flat < E)).all()), op, "expert id out of range")
    order = torch.sort(flat, stable=True).indices
    expanded_x = x[order // K]
    row_idx = torch.empty(N * K, dtype=torch.int32, device=x.device)
    row_idx[order] = torch.arange(N * K, dtype=torch.int32, device=x.device)
    counts = torch.bincount(flat, minlength=E).to(torch.int64)
    tokens = None
    if expert_tokens_num_flag:
        require(expert_tokens_num_type in (0, 1), op, "expert_tokens_num_type must be 0 (cumsum) or 1 (count)")
        tokens = counts if expert_tokens_num_type == 1 else counts.cumsum(0)
    return expanded_x, row_idx, tokens, None


@vendor_op("npu_grouped_matmul")
def npu_grouped_matmul(x, weight, *, bias=None, group_list=None, split_item=0, group_type=None,
                       group_list_type=0, act_type=0, **unused):
    """§6: split_item 2, group_type 0: rows of x[0] split into E groups by group_list
    (counts when group_list_type=1, cumulative ends when 0); group e times weight[0][e]
    ([E, K, N]); returns a one-tensor list."""
    op = "npu_grouped_matmul"
    require(isinstance(x, list) and isinstance(weight, list) and len(x) == len(weight) == 1, op,
            "x and weight must be one-tensor lists")
    require(split_item == 2 and group_type == 0 and bias is None and act_type == 0, op,
            "emulation covers split_item=2, group_type=0, no bias, no activation")
    require(not {k: v for k, v in unused.items() if v is not None}, op, f"arguments not emulated: {sorted(unused)}")
    xs, w = x[0], weight[0]
    tensor(op, "x[0]", xs, FLOATS, ndim=2)
    tensor(op, "weight[0]", w, (xs.dtype,), ndim=3)
    tensor(op, "group_list", group_list, (torch.int64,), ndim=1)
    E, Kw, N = w.shape
    require(xs.shape[1] == Kw and group_list.shape[0] == E and E <= 1024, op,
            f"x {tuple(xs.shape)}, weight {tuple(w.shape)}, group_list {tuple(group_list.shape)}")
    ends = group_list.cumsum(0) if group_list_type == 1 else group_list
    require(int(ends[-1]) == xs.shape[0], op, f"groups cover {int(ends[-1])} rows, x has {xs.shape[0]}")
    out = torch.empty(xs.shape[0], N, dtype=xs.dtype, device=xs.device)
    start = 0
    for e, end in enumerate(ends.tolist()):
        out[start:end] = (xs[start:end].float() @ w[e].float()).to(xs.dtype)
        start = end
    return [out]


@vendor_op("npu_moe_token_unpermute")
def npu_moe_token_unpermute(permuted_tokens, sorted_indices, probs=None, padded_mode=False, restore_shape=None):
    """§6: out[t] = sum_k probs[t, k] * permuted[sorted_indices[t*K + k]] (gather), [N, H]."""
    op = "npu_moe_token_unpermute"
    tensor(op, "permuted_tokens", permuted_tokens, FLOATS, ndim=2)
    tensor(op, "sorted_indices", sorted_indices, (torch.int32,), ndim=1)
    require(probs is not None and not padded_mode and restore_shape is None, op, "emulation covers probs given")
    tensor(op, "probs", probs, FLOATS, ndim=2)
    N, K = probs.shape
    require(sorted_indices.shape[0] == N * K, op, "sorted_indices must hold N * K rows")
    rows = permuted_tokens[sorted_indices.long()].float().view(N, K, -1)
    return (rows * probs.float()[:, :, None]).sum(1).to(permuted_tokens.dtype)
