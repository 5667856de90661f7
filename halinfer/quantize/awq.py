"""AWQ (Lin et al., 2023): activation-aware per-input-channel scales, then 4-bit
asymmetric round-to-nearest in groups, written in AutoAWQ's GEMM layout.

For each group of linears reading one input X (q/k/v; o; gate/up; down) the search
tries s = mean|X|^alpha for alpha on a grid over [0, 1) (s normalised by sqrt(max min))
and keeps the s minimising sum over the group's linears of mean((X W^T - X (Q(W s) / s)^T)^2),
measured on at most ``search_tokens`` rows of X.  alpha = 0 is s = 1, plain
round-to-nearest, so the chosen scale is never worse than that on the search data.

Where the scale goes: 1/s is folded into the op before the group, so the float model is
unchanged before rounding: the RMSNorm weight for q/k/v and gate/up, up_proj's rows for
down_proj, and v_proj's rows for o_proj only when v_proj's output is o_proj's input
channel for channel.  With grouped-query attention (where AutoAWQ leaves o_proj unscaled)
one v channel feeds the same channel of several heads of o's input, so the scale is tied:
each candidate s is averaged over the heads sharing a KV head, and v's rows take that
shared scale, which keeps the fold exact.

Then, as AutoAWQ does, a clipping search per group of ``group_size`` inputs of each output
row: the weights are clamped to +-r max|w| for the r in {1, 0.95, ..., 0.5} that minimises
that group's share of the output error on the (scaled) inputs.  r = 1 is no clipping, so
this is never worse on the search data.  q_proj and k_proj are not clipped (their output
error says little about the attention scores; AutoAWQ skips them too).
"""
from __future__ import annotations

import torch

from ..core.ops.quant import awq_pack
from .capture import GROUPS
from .grid import quantize_groups

BITS = 4


def _fake_quant(w, group):
    return quantize_groups(w, BITS, group)[3]


@torch.no_grad()
def search_scale(x: torch.Tensor, weights: list[torch.Tensor], group: int, grid: int = 20,
                 search_tokens: int = 1024, tie=None):
    """(best s [K], losses per alpha [grid]) for the linears ``weights`` ([N_i, K]) reading x [T, K].
    ``tie`` maps a candidate s to the constrained one (grouped-query attention)."""
    x_mean = x.abs().mean(0)
    if x.shape[0] > search_tokens:  # evenly spaced rows: the loss on a subset, the statistic on all
        x = x[torch.linspace(0, x.shape[0] - 1, search_tokens).long()]
    refs = [x @ w.t() for w in weights]
    losses, best, best_loss = [], torch.ones_like(x_mean), None
    for i in range(grid):
        alpha = i / grid
        s = x_mean.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        if tie is not None:
            s = tie(s)
        loss = sum(float(((r - x @ (_fake_quant(w * s, group) / s).t()) ** 2).mean()) for w, r in zip(weights, refs))
        losses.append(loss)
        if best_loss is None or loss < best_loss:
            best_loss, best = loss, s
    return best, losses


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, group: int, steps: int = 10, search_tokens: int = 512,
                rows: int = 256):
    """(max|w| bound per output row and input group [N, G], error per ratio [steps + 1]) for
    w [N, K] reading x [T, K]: the ratio r of each group's own max|w| minimising
    mean_t (x_group . (w_group - Q(clamp(w_group, +-r max))))^2."""
    N, K = w.shape
    G = K // group
    if x.shape[0] > search_tokens:
        x = x[torch.linspace(0, x.shape[0] - 1, search_tokens).long()]
    xg = x.reshape(-1, G, group)
    wg = w.reshape(N, G, group)
    amax = wg.abs().amax(-1)                                        # [N, G]
    best_err = torch.full((N, G), float("inf"))
    best = amax.clone()
    totals = []
    for i in range(steps + 1):
        bound = amax * (1 - 0.5 * i / steps)
        clipped = torch.maximum(torch.minimum(wg, bound[..., None]), -bound[..., None])
        err = torch.empty(N, G)
        for a in range(0, N, rows):  # rows at a time: [T, rows, G] stays small
            d = wg[a:a + rows] - _fake_quant(clipped[a:a + rows].reshape(-1, K), group).reshape(-1, G, group)
            err[a:a + rows] = (torch.einsum("tgk,ngk->tng", xg, d) ** 2).mean(0)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, bound, best)
        totals.append(float(err.sum()))
    return best, totals


def _gqa_tie(attn):
    """For o_proj's input under grouped-query attention: (s [heads*hd] -> s averaged over the
    heads of each KV head, s [heads*hd] -> the per-v-channel scale [kv*hd]); None without GQA."""
    rep, hd = int(getattr(attn, "num_key_value_groups", 1)), int(attn.head_dim)
    if rep == 1:
        return None

    def tie(s):
        return s.view(-1, rep, hd).mean(1, keepdim=True).expand(-1, rep, hd).reshape(-1)

    return tie, lambda s: s.view(-1, rep, hd)[:, 0].reshape(-1)


def _fold_into_previous(prev, s: torch.Tensor) -> None:
    """prev's output channel j is divided by s_j (an RMSNorm weight, or a linear's rows and bias)."""
    prev.weight.data /= s.view(-1, *([1] * (prev.weight.dim() - 1)))
    if getattr(prev, "bias", None) is not None:
        prev.bias.data /= s


class AWQ:
    name = "awq"
    needs_calibration = True

    def __init__(self, group_size: int = 128, **_):
        self.group = group_size

    def config(self) -> dict:
        return {"quant_method": "awq", "bits": BITS, "group_size": self.group, "zero_point": True,
                "version": "gemm", "modules_to_not_convert": None}

    @torch.no_grad()
    def quantize_layer(self, layer, inputs: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        # All scales are chosen on the unscaled layer, then applied, then everything is rounded.
        chosen, gqa = {}, _gqa_tie(layer.self_attn)
        for g, (prev, names) in GROUPS.items():
            mods = [layer.get_submodule(n) for n in names]
            tie = gqa[0] if g == "attn_out" and gqa else None
            s = search_scale(inputs[g], [m.weight.float() for m in mods], self.group, tie=tie)[0]
            chosen[g] = tie(s) if tie else s
        for g, s in chosen.items():
            prev, names = GROUPS[g]
            _fold_into_previous(layer.get_submodule(prev), gqa[1](s) if g == "attn_out" and gqa else s)
            for n in names:
                layer.get_submodule(n).weight.data *= s[None, :]
        out = {}
        for g, (_, names) in GROUPS.items():
            x = inputs[g] / chosen[g] if g in chosen else inputs[g]  # what the scaled weights will read
            for n in names:
                if n.endswith(("q_proj", "k_proj")):
                    continue
                w = layer.get_submodule(n).weight
                N, K = w.shape
                bound = search_clip(x, w.float(), self.group)[0].repeat_interleave(self.group, 1)
                w.data.copy_(torch.maximum(torch.minimum(w.float(), bound), -bound))
        for n in (n for _, names in GROUPS.values() for n in names):
            mod = layer.get_submodule(n)
            q, scale, zero, dense = quantize_groups(mod.weight.float(), BITS, self.group)
            mod.weight.data.copy_(dense)
            # AutoAWQ GEMM: qweight [K, N/8], qzeros [K/g, N/8], scales [K/g, N] float16.
            out[n] = {"qweight": awq_pack(q.t()), "qzeros": awq_pack(zero.t()), "scales": scale.t().half().contiguous()}
        return out
