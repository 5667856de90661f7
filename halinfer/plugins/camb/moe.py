"""Mixture of experts through torch_mlu_ops (vendors/camb.md §7, dlinfer's fused_moe).

Routing: ``moe_softmax_topk`` (float32 softmax then top-k; renormalised in
torch).  Experts: ``moe_gen_idx`` sorts token copies by expert,
``moe_expand_input`` gathers them, ``group_gemm`` (weights in [E, out, in],
TMO's default trans_b), ``moe_active`` (gated SiLU written into the GEMM's own
buffer; its first half is the activation), a second ``group_gemm``, and
``moe_combine_result`` weights and sums each token's copies.  Device-side only.
The case name (a str) for what these calls do not cover; CambOps declares those
cases and runs the reference for them.
"""
from __future__ import annotations

import torch

from halinfer.core.ops.moe import experts_case, route_case


class TmoMoE:
    def __init__(self, tmo):
        self.tmo = tmo

    def route(self, logits, top_k, *, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
              correction_bias=None, routed_scaling=1.0):
        case = route_case(scoring, num_groups, topk_groups, correction_bias)
        if case:
            return case
        w, ids = self.tmo.moe_softmax_topk(logits.float(), top_k)
        if renormalize:
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-20)
        return w * routed_scaling, ids.to(torch.int32)

    def experts(self, x, w13, w2, topk_weights, topk_ids, *, activation="silu", w13_bias=None, w2_bias=None):
        case = experts_case(activation, w13_bias, w2_bias)
        if case:
            return case
        T = x.shape[0]
        E, inter = w13.shape[0], w2.shape[-1]
        tmo = self.tmo
        expand_idx, combine_idx, counts, cusum = tmo.moe_gen_idx(topk_ids.to(torch.int32), E)
        xs = tmo.moe_expand_input(x.contiguous(), expand_idx, cusum, start_expert_id=0, expert_size=E)
        up = tmo.group_gemm(xs, w13, counts, None, None, None, None, max_in_group_list=T)
        act = tmo.moe_active(up, act_mode="silu", is_gated=True, output=up, bias=None, cusum_token_count=cusum,
                             start_expert_id=0, expert_size=E)[:, :inter]
        down = tmo.group_gemm(act, w2, counts, None, None, None, None, max_in_group_list=T)
        return tmo.moe_combine_result(down, reduce_weight=topk_weights.float(), gather_ids=combine_idx,
                                      residual=None, cusum_token_count=cusum, start_expert_id=0, expert_size=E,
                                      bias=None)
