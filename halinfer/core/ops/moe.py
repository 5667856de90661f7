"""Mixture-of-experts references: routing and the expert computation."""
from __future__ import annotations

import torch

from .activation import ACTIVATIONS

# Named features of a call, for overrides that declare which ones they hand to the reference.
ROUTE_CASES = ("sigmoid", "correction_bias", "grouped_topk")
EXPERT_CASES = ("activation", "expert_bias")


def route_case(scoring, num_groups, topk_groups, correction_bias) -> str | None:
    """The routing case a softmax-top-k vendor op cannot take, or None."""
    if scoring != "softmax":
        return "sigmoid"
    if correction_bias is not None:
        return "correction_bias"
    if num_groups and topk_groups and num_groups > 1:
        return "grouped_topk"
    return None


def experts_case(activation, w13_bias, w2_bias) -> str | None:
    """The expert case a SiLU-only, bias-free vendor op cannot take, or None."""
    if activation != "silu":
        return "activation"
    if w13_bias is not None or w2_bias is not None:
        return "expert_bias"
    return None


def moe_route(
    logits: torch.Tensor,
    top_k: int,
    *,
    scoring: str = "softmax",
    renormalize: bool = True,
    num_groups: int | None = None,
    topk_groups: int | None = None,
    correction_bias: torch.Tensor | None = None,
    routed_scaling: float = 1.0,
):
    """Choose top_k experts per token.

    logits: [T, E] router output (any float dtype; computed in float32).
    scoring: "softmax" or "sigmoid" turns logits into scores.
    correction_bias [E] (DeepSeek-V3 / GLM-4.5): added to the scores for *choosing*
    experts only; the weights are the unbiased scores.
    Grouped top-k (num_groups, topk_groups): experts split into num_groups equal
    groups; a group's score is its max choice-score, or with correction_bias the
    sum of its top two; only experts of the best topk_groups groups may be chosen.
    renormalize: weights divided by their sum.  Then multiplied by routed_scaling.
    Returns (weights float32 [T, top_k], ids int32 [T, top_k]).
    """
    x = logits.float()
    scores = torch.softmax(x, dim=-1) if scoring == "softmax" else torch.sigmoid(x)
    choice = scores if correction_bias is None else scores + correction_bias.float()
    if num_groups and topk_groups and num_groups > 1:
        T, E = choice.shape
        g = choice.view(T, num_groups, E // num_groups)
        if correction_bias is None:
            gscore = g.amax(-1)
        else:
            gscore = g.topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(gscore, dtype=torch.bool)
        keep.scatter_(1, gscore.topk(topk_groups, dim=-1).indices, True)
        choice = choice.masked_fill(~keep[:, :, None].expand_as(g).reshape(T, E), float("-inf"))
    ids = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-20)
    return weights * routed_scaling, ids.to(torch.int32)


def fused_moe(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    activation: str = "silu",
    w13_bias: torch.Tensor | None = None,
    w2_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over a token's chosen experts of weight * expert(x).

    x: [T, H]; w13: [E, 2I, H] (gate rows first, then up); w2: [E, H, I];
    w13_bias [E, 2I] / w2_bias [E, H] optional; topk_weights float [T, k];
    topk_ids int [T, k].  expert_e(x) = act(x @ w13[e]^T + b13[e]) @ w2[e]^T + b2[e],
    act one of core.ops.activation.ACTIVATIONS.  Returns [T, H] in x's dtype
    (accumulated in float32).
    """
    act = ACTIVATIONS[activation]
    T, H = x.shape
    out = torch.zeros(T, H, dtype=torch.float32, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        h = x[tok].float() @ w13[e].float().t()
        if w13_bias is not None:
            h = h + w13_bias[e].float()
        h = act(h) @ w2[e].float().t()
        if w2_bias is not None:
            h = h + w2_bias[e].float()
        out.index_add_(0, tok, h * topk_weights[tok, slot].float()[:, None])
    return out.to(x.dtype)
