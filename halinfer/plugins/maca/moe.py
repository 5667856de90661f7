"""Expert computation for small token counts without host syncs (capturable in a graph).

Every expert runs on every token and each token keeps the outputs of its chosen
experts, weighted.  For a decode batch (a few tokens) a step reads every
expert's weights anyway once the batch touches most experts, so the extra
arithmetic is cheap next to the memory traffic; for long prefills it is not,
and the caller uses the core's per-expert loop there (eager, not captured).
The core reference syncs the host (torch.unique(...).tolist()), which a CUDA
graph capture refuses; this path is what decode graphs of MoE models run on
MACA until the CUDA plugin offers a Triton fused-MoE kernel (vendors/maca.md §4:
dlinfer runs vLLM's Triton fused-MoE kernel on MACA).
"""
from __future__ import annotations

import torch

from halinfer.core.ops.activation import ACTIVATIONS

DENSE_MAX_TOKENS = 256   # the largest decode batch the engine captures by default


def dense_experts(x, w13, w2, topk_weights, topk_ids, *, activation="silu", w13_bias=None, w2_bias=None):
    """Same contract as Ops.fused_moe; accumulates in float32."""
    T, E = x.shape[0], w13.shape[0]
    h = torch.einsum("th,eih->eti", x.float(), w13.float())               # [E, T, 2I]
    if w13_bias is not None:
        h = h + w13_bias.float()[:, None, :]
    y = torch.einsum("eti,ehi->eth", ACTIVATIONS[activation](h), w2.float())   # [E, T, H]
    if w2_bias is not None:
        y = y + w2_bias.float()[:, None, :]
    gate = torch.zeros(T, E, dtype=torch.float32, device=x.device)
    gate.scatter_add_(1, topk_ids.long(), topk_weights.float())
    return torch.einsum("te,eth->th", gate, y).to(x.dtype)
