"""The Qwen3-VL vision tower, with HF's parameter names: the Qwen2-VL patch embedding (with
bias) and 2-D rotary, plus learned absolute positions on a square grid resampled to each
image's patch grid (bilinear, corners aligned), LayerNorm blocks with a plain MLP, and
DeepStack: after the blocks of ``deepstack_visual_indexes`` a merger of their own (norm
after the 2x2 shuffle) turns the hidden state into features for early decoder layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ModelContext, hf_activation
from .blocks import linear, norm
from .qwen_vit import QwenVisionBlock, _frame_bounds, vision_rope_table


class Qwen3Merger(nn.Module):
    """norm (over a patch, or over the 2x2 shuffled window: postshuffle), fc1, GELU, fc2."""

    def __init__(self, ctx: ModelContext, dim: int, out: int, merge: int, postshuffle: bool):
        super().__init__()
        self.ops, self.width, self.post = ctx.ops, dim * merge * merge, postshuffle
        self.norm = norm(ctx, self.width if postshuffle else dim, 1e-6)
        self.linear_fc1, self.linear_fc2 = linear(ctx, self.width, self.width), linear(ctx, self.width, out)

    def forward(self, x):
        h = self.norm(x.reshape(-1, self.width)) if self.post else self.norm(x).reshape(-1, self.width)
        return self.linear_fc2(self.ops.act(self.linear_fc1(h), "gelu"))


class Qwen3VisionTower(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict):
        super().__init__()
        self.ctx = ctx
        dim, heads, out = vc["hidden_size"], vc["num_heads"], vc["out_hidden_size"]
        self.merge, self.patch = vc.get("spatial_merge_size", 2), vc["patch_size"]
        self.head_dim = dim // heads
        self.theta = float((vc.get("rope_parameters") or {}).get("rope_theta", 10000.0))
        c, tp = vc.get("in_channels", 3), vc.get("temporal_patch_size", 2)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = proj = nn.Module()
        proj.weight = nn.Parameter(torch.empty(dim, c, tp, self.patch, self.patch, dtype=ctx.dtype), requires_grad=False)
        proj.bias = nn.Parameter(torch.empty(dim, dtype=ctx.dtype), requires_grad=False)
        n_pos = vc.get("num_position_embeddings", 2304)
        self.side = int(round(n_pos ** 0.5))
        self.pos_embed = nn.Module()
        self.pos_embed.weight = nn.Parameter(torch.empty(n_pos, dim, dtype=ctx.dtype), requires_grad=False)
        act = hf_activation(vc.get("hidden_act", "gelu_pytorch_tanh"))
        self.blocks = nn.ModuleList(QwenVisionBlock(ctx, dim, heads, vc["intermediate_size"], act, False,
                                                    mlp_names=("linear_fc1", "linear_fc2"))
                                    for _ in range(vc["depth"]))
        self.merger = Qwen3Merger(ctx, dim, out, self.merge, postshuffle=False)
        self.deepstack_layers = list(vc.get("deepstack_visual_indexes", ()))
        self.deepstack_merger_list = nn.ModuleList(Qwen3Merger(ctx, dim, out, self.merge, postshuffle=True)
                                                   for _ in self.deepstack_layers)

    def rope_table(self, grids, device) -> torch.Tensor:
        return vision_rope_table(self.head_dim, self.theta, grids, self.merge, device)

    def positions(self, grids) -> torch.Tensor:
        """[N, D]: the learned grid resampled to each image's (h, w), in merge-window order."""
        table = self.pos_embed.weight.float().t().reshape(1, -1, self.side, self.side)
        out = []
        for t, h, w in grids:
            g = F.interpolate(table, size=(h, w), mode="bilinear", align_corners=True)[0]   # [D, h, w]
            m = self.merge
            g = g.reshape(-1, h // m, m, w // m, m).permute(1, 3, 2, 4, 0).reshape(h * w, -1)
            out.append(g.repeat(t, 1))
        return torch.cat(out).to(self.pos_embed.weight.dtype)

    def forward(self, pixels: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        """[N, C*T*P*P] patches -> [N / merge^2, out * (1 + deepstack layers)]: the merged
        features, then each DeepStack layer's, side by side (one encoder-cache row per token)."""
        dev = pixels.device
        w = self.patch_embed.proj.weight
        x = self.ctx.ops.patch_embed(pixels.view(pixels.shape[0], *w.shape[1:]), w, self.patch_embed.proj.bias)
        x = x + self.positions(grids).to(dev)
        table = self.rope_table(grids, dev)
        cu = torch.tensor(_frame_bounds(grids), dtype=torch.int32, device=dev)
        deep = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, cu, table)
            if i in self.deepstack_layers:
                deep.append(self.deepstack_merger_list[self.deepstack_layers.index(i)](x))
        return torch.cat([self.merger(x)] + deep, dim=-1)
