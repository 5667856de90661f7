"""The Qwen2-VL / Qwen2.5-VL vision tower, with HF's parameter names.

Patches arrive flattened by the image processor ([N, C*T*P*P], in 2x2 merge-window order);
attention is bidirectional within each image (Qwen2.5-VL: within windows of
``window_size`` pixels, except in ``fullatt_block_indexes``); 2-D rotary gives the first
half of each head's frequencies the patch row and the second half its column; the merger
concatenates each merge window's patches and projects them to the text width.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ModelContext, hf_activation
from .blocks import VisionMLP, linear, norm


class QwenVisionAttention(nn.Module):
    def __init__(self, ctx: ModelContext, dim: int, heads: int):
        super().__init__()
        self.ops, self.H, self.D = ctx.ops, heads, dim // heads
        self.qkv, self.proj = linear(ctx, dim, 3 * dim), linear(ctx, dim, dim)

    def forward(self, x, cu_seqlens, rope_table):
        N = x.shape[0]
        q, k, v = self.qkv(x).view(N, 3, self.H, self.D).unbind(1)
        pos = torch.arange(N, device=x.device)
        q, k = self.ops.rotary(q, k, pos, rope_table, True)
        return self.proj(self.ops.vision_attention(q, k, v, cu_seqlens, self.D ** -0.5).reshape(N, -1))


class QwenVisionBlock(nn.Module):
    """Pre-norm attention + MLP: Qwen2-VL (LayerNorm, fc1/fc2), Qwen2.5-VL (``v25``: RMSNorm, gated
    MLP), Qwen3-VL (Qwen2-VL's, with its MLP named linear_fc1/linear_fc2)."""

    def __init__(self, ctx: ModelContext, dim: int, heads: int, hidden: int, act: str, v25: bool,
                 mlp_names: tuple[str, str] = ("fc1", "fc2")):
        super().__init__()
        kind = "rms" if v25 else "layer"
        self.norm1, self.norm2 = norm(ctx, dim, 1e-6, kind), norm(ctx, dim, 1e-6, kind)
        self.attn = QwenVisionAttention(ctx, dim, heads)
        self.mlp = VisionMLP(ctx, dim, hidden, act, gated=v25, names=mlp_names)

    def forward(self, x, cu_seqlens, rope_table):
        x = x + self.attn(self.norm1(x), cu_seqlens, rope_table)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, ctx: ModelContext, dim: int, out: int, merge: int, v25: bool):
        super().__init__()
        self.ops, self.width = ctx.ops, dim * merge * merge
        self.ln_q = norm(ctx, dim, 1e-6, "rms" if v25 else "layer")
        # HF's nn.Sequential(Linear, GELU, Linear): parameters mlp.0.* and mlp.2.*
        self.mlp = nn.ModuleList([linear(ctx, self.width, self.width), nn.Identity(), linear(ctx, self.width, out)])

    def forward(self, x):
        h = self.ln_q(x).reshape(-1, self.width)
        return self.mlp[2](self.ops.act(self.mlp[0](h), "gelu"))


def vision_rope_table(head_dim: int, theta: float, grids, merge: int, device) -> torch.Tensor:
    """float32 [N, head_dim]: cos | sin of (row freqs, col freqs) per patch, in merge-window order
    (the Qwen2-VL, Qwen2.5-VL and Qwen3-VL towers' 2-D rotary)."""
    sd = head_dim // 2
    inv = 1.0 / (theta ** (torch.arange(0, sd, 2, dtype=torch.float32) / sd))
    rows, cols = patch_rows_cols(grids, merge)
    freqs = torch.cat((rows[:, None] * inv, cols[:, None] * inv), dim=-1)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(device)


def patch_rows_cols(grids: list[tuple[int, int, int]], merge: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every patch, in the processor's merge-window order."""
    rows, cols = [], []
    for t, h, w in grids:
        r = torch.arange(h)[:, None].expand(h, w)
        c = torch.arange(w)[None, :].expand(h, w)
        shape = (h // merge, merge, w // merge, merge)
        rows.append(r.reshape(shape).transpose(1, 2).flatten().repeat(t))
        cols.append(c.reshape(shape).transpose(1, 2).flatten().repeat(t))
    return torch.cat(rows), torch.cat(cols)


def window_order(grids: list[tuple[int, int, int]], merge: int, window: int) -> tuple[torch.Tensor, list[int]]:
    """Qwen2.5-VL's windows: (merge-unit order that groups each window's units together,
    cumulative window lengths in patches).  Windows tile each frame's merged grid in
    ``window`` x ``window`` squares (cut short at the edges), raster order."""
    order, cu, base = [], [0], 0
    unit = merge * merge
    for t, h, w in grids:
        gh, gw = h // merge, w // merge
        idx = torch.arange(t * gh * gw).view(t, gh, gw)
        for f in range(t):
            for r0 in range(0, gh, window):
                for c0 in range(0, gw, window):
                    win = idx[f, r0:r0 + window, c0:c0 + window].flatten()
                    order.append(win + base)
                    cu.append(cu[-1] + win.numel() * unit)
        base += t * gh * gw
    return torch.cat(order), cu


class QwenVisionTower(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict, v25: bool):
        super().__init__()
        self.ctx, self.v25 = ctx, v25
        dim = vc["hidden_size"] if v25 else vc["embed_dim"]
        out = vc["out_hidden_size"] if v25 else vc["hidden_size"]
        heads = vc["num_heads"]
        hidden = vc["intermediate_size"] if v25 else int(dim * vc.get("mlp_ratio", 4))
        act = hf_activation(vc.get("hidden_act", "silu" if v25 else "quick_gelu"))
        self.merge, self.patch = vc.get("spatial_merge_size", 2), vc["patch_size"]
        self.head_dim = dim // heads
        self.theta = float((vc.get("rope_parameters") or {}).get("rope_theta", 10000.0))
        self.window = vc.get("window_size", 0) // self.merge // self.patch if v25 else 0
        self.full_blocks = set(vc.get("fullatt_block_indexes", ())) if v25 else None
        c, tp = vc.get("in_channels", 3), vc.get("temporal_patch_size", 2)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Module()
        self.patch_embed.proj.weight = nn.Parameter(torch.empty(dim, c, tp, self.patch, self.patch, dtype=ctx.dtype),
                                                    requires_grad=False)
        self.blocks = nn.ModuleList(QwenVisionBlock(ctx, dim, heads, hidden, act, v25) for _ in range(vc["depth"]))
        self.merger = PatchMerger(ctx, dim, out, self.merge, v25)

    def rope_table(self, grids, device) -> torch.Tensor:
        return vision_rope_table(self.head_dim, self.theta, grids, self.merge, device)

    def forward(self, pixels: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        """[N, C*T*P*P] patches of the images with these (t, h, w) grids -> [N / merge^2, out]."""
        dev = pixels.device
        w = self.patch_embed.proj.weight
        x = self.ctx.ops.patch_embed(pixels.view(pixels.shape[0], *w.shape[1:]), w)
        table = self.rope_table(grids, dev)
        cu_full = torch.tensor(_frame_bounds(grids), dtype=torch.int32, device=dev)
        order = None
        if self.v25:
            order, cu_win = window_order(grids, self.merge, self.window)
            order = order.to(dev)
            unit = self.merge ** 2
            x = x.view(-1, unit, x.shape[-1])[order].reshape(-1, x.shape[-1])
            table = table.view(-1, unit, table.shape[-1])[order].reshape(-1, table.shape[-1])
            cu_win = torch.tensor(cu_win, dtype=torch.int32, device=dev)
        for i, blk in enumerate(self.blocks):
            cu = cu_full if (order is None or i in self.full_blocks) else cu_win
            x = blk(x, cu, table)
        out = self.merger(x)
        if order is not None:
            out = out[torch.argsort(order)]
        return out


def _frame_bounds(grids) -> list[int]:
    """Cumulative patch counts, one sequence per frame (images: one frame)."""
    cu = [0]
    for t, h, w in grids:
        for _ in range(t):
            cu.append(cu[-1] + h * w)
    return cu
