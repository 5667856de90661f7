"""Mixture of experts on torch_npu's MoE ops (vendors/ascend.md §6, dlinfer's current path).

Routing: ``npu_moe_gating_top_k_softmax`` (softmax top-k; renormalisation in
torch, as dlinfer does).  Experts: ``npu_moe_init_routing_v2`` sorts token
copies by expert, two ``npu_grouped_matmul`` calls (per-expert counts as the
group list) with SwiGLU between them, ``npu_moe_token_unpermute`` gathers and
weights the copies back per token.  All device-side: capturable in a graph.

torch_npu v2.5.1-7.0.0 (op-plugin 7b9ce1c) has no npu_moe_token_unpermute; there the
combine is the same gather written in torch (index_select + weighted sum over the k
copies), not npu_moe_finalize_routing, whose k-major source-row indexing does not match
init_routing_v2's row index and which vllm-ascend avoids for accuracy (vendors/ascend.md §6).

Returns the name of the case (a str) for what these ops do not cover (sigmoid
scoring, grouped top-k, a correction bias, activations other than SiLU, expert
biases, more than 1024 experts, float32); AscendOps declares those cases and runs
the core reference for them.
"""
from __future__ import annotations

import torch

from halinfer.core.ops.moe import experts_case, route_case

MAX_GROUPS = 1024   # group_list length limit of aclnnGroupedMatmulV5


class NpuMoE:
    def __init__(self, torch_npu, silu_and_mul, features):
        self.npu = torch_npu
        self.silu_and_mul = silu_and_mul
        self.features = features

    def route(self, logits, top_k, *, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
              correction_bias=None, routed_scaling=1.0):
        case = route_case(scoring, num_groups, topk_groups, correction_bias)
        if case:
            return case
        # float32 logits: the op returns weights in its input's dtype, the contract wants float32.
        w, ids, _ = self.npu.npu_moe_gating_top_k_softmax(logits.float(), None, k=top_k)
        w = w.float()
        if renormalize:
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-20)
        return w * routed_scaling, ids.to(torch.int32)

    def experts(self, x, w13, w2, topk_weights, topk_ids, *, activation="silu", w13_bias=None, w2_bias=None):
        E = w13.shape[0]
        case = experts_case(activation, w13_bias, w2_bias) or ("experts" if E > MAX_GROUPS else None) or \
            ("float32" if x.dtype not in (torch.float16, torch.bfloat16) else None)
        if case:
            return case
        T, k = topk_ids.shape
        npu = self.npu
        xs, rows, counts, _ = npu.npu_moe_init_routing_v2(
            x.contiguous(), topk_ids.to(torch.int32), active_num=T * k, expert_num=E, expert_tokens_num_type=1,
            expert_tokens_num_flag=True, active_expert_range=[0, E], quant_mode=-1)
        # Weights are stored [E, out, in]; the grouped GEMM takes [E, in, out] (a transposed view, as dlinfer).
        up = npu.npu_grouped_matmul([xs], [w13.transpose(1, 2)], group_list=counts, split_item=2, group_type=0,
                                    group_list_type=1)[0]
        down = npu.npu_grouped_matmul([self.silu_and_mul(up)], [w2.transpose(1, 2)], group_list=counts,
                                      split_item=2, group_type=0, group_list_type=1)[0]
        probs = topk_weights.to(x.dtype)
        if self.features.moe_token_unpermute:
            return npu.npu_moe_token_unpermute(down, rows, probs=probs)
        # out[t] = sum_j probs[t, j] * down[rows[t*k + j]]  (rows: destination of flat copy t*k + j)
        copies = down.index_select(0, rows.long()).view(T, k, -1)
        return (copies.float() * probs.float().unsqueeze(-1)).sum(1).to(x.dtype)
