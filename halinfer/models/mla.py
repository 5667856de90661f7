"""Multi-head latent attention (DeepSeek-V2, MiniCPM3), run on the compressed cache.

Per token the model computes a latent ``c = RMSNorm(x @ W_DKV)`` (kv_lora_rank
channels) and one rope key ``k_pe`` shared by all heads.  Head h's key is
``[W_UK[h] c, k_pe]`` and its value ``W_UV[h] c`` (W_UK, W_UV: the two halves of
kv_b_proj).  Nothing per-head needs storing: the cache keeps ``[c, k_pe]`` per token
as a single KV "head" (KVSpec(1, L + R, None)), and both prefill and decode attend
over it with the up-projections absorbed:

    score_h = q_nope_h . (W_UK[h] c) + q_pe_h . k_pe = [W_UK[h]^T q_nope_h, q_pe_h] . [c, k_pe]
    out_h   = W_UV[h] (sum_j p_hj c_j)

so ``Ops.paged_attention`` sees queries [T, H, L + R] against a one-head cache and
returns the latent-space output [T, H, L] (its values are the first L channels of
the cache: ``v_head_dim=L``).  The per-head matrices are views of kv_b_proj's
weight, kept unquantized.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.attention import AttentionMetadata
from ..core.distributed import split_evenly
from .layers import Attention, KVSpec, Linear, ModelContext, RMSNorm, Rotary
from .parallel import ColumnParallelLinear, Part, RowParallelLinear

# A family with MLA merges only the MLP's gate/up (its q_proj is a matrix of its own).
MLA_STACKED = {"gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}
# The MLA checkpoints' inner norms (q_a_layernorm, kv_a_layernorm) use the RMSNorm default eps, not the config's.
LATENT_NORM_EPS = 1e-6


class LatentCache(Attention):
    """One layer's MLA cache and the attention over it: store [c, k_pe], attend, return [T, H, L]."""

    def __init__(self, ctx: ModelContext, num_heads: int, latent_dim: int, rope_dim: int, scale: float, **attn_kw):
        nn.Module.__init__(self)  # the cache shape differs from Attention's (no value cache)
        self.ops = ctx.ops
        self.num_heads, self.num_kv_heads = num_heads, 1
        self.head_dim, self.v_head_dim = latent_dim + rope_dim, latent_dim
        self.scale = scale
        self.attn_kw = {k: v for k, v in attn_kw.items() if v is not None}
        self.layer_index = len(ctx.kv_specs)
        ctx.kv_specs.append(KVSpec(1, latent_dim + rope_dim, None))
        self.kv = None

    def forward(self, q: torch.Tensor, latent: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """q [T, H, L+R], latent [T, 1, L+R] -> [T, H, L]."""
        self.ops.store_kv(latent, None, self.kv, meta.slot_mapping)
        return self.ops.paged_attention(q, self.kv, meta, scale=self.scale, v_head_dim=self.v_head_dim,
                                        **self.attn_kw)


class MLAttention(nn.Module):
    """DeepSeek-V2-style attention block: x [T, hidden] -> [T, hidden].

    Reads q_lora_rank (None: a plain q_proj), kv_lora_rank, qk_nope_head_dim,
    qk_rope_head_dim, v_head_dim and attention_bias from the config; ``scale`` is the
    softmax scale (qk_head_dim^-0.5 times any YaRN mscale^2) and ``rotary`` rotates the
    rope parts (the family picks interleaved or half rotation).
    """

    def __init__(self, ctx: ModelContext, cfg, rotary: Rotary, scale: float):
        super().__init__()
        hidden = cfg.hidden_size
        full_heads = cfg.num_attention_heads
        # Heads split across ranks; the latent (q_a, kv_a) is computed whole on every rank,
        # so the latent cache is replicated, and only per-head matrices are sharded.
        q0, self.H = split_evenly(full_heads, ctx.tp.size, ctx.tp.rank, "num_attention_heads")
        H = self.H
        self.nope, self.rope = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.vd, self.L = cfg.v_head_dim, cfg.kv_lora_rank
        self.q_lora = cfg.get("q_lora_rank")
        bias = bool(cfg.get("attention_bias", False))
        qk = self.nope + self.rope

        def per_head(width):  # this rank's heads of a [heads * width, ...] matrix
            return [Part(full_heads * width, q0 * width, H * width)]

        if self.q_lora:
            self.q_a_proj = Linear(ctx, hidden, self.q_lora, bias=bias)
            self.q_a_layernorm = RMSNorm(ctx, self.q_lora, LATENT_NORM_EPS)
            self.q_b_proj = ColumnParallelLinear(ctx, self.q_lora, full_heads * qk, parts=per_head(qk))
        else:
            self.q_proj = ColumnParallelLinear(ctx, hidden, full_heads * qk, parts=per_head(qk))
        self.kv_a_proj_with_mqa = Linear(ctx, hidden, self.L + self.rope, bias=bias)
        self.kv_a_layernorm = RMSNorm(ctx, self.L, LATENT_NORM_EPS)
        # Absorbed into the query and the output below, so it stays a dense matrix.
        self.kv_b_proj = ColumnParallelLinear(ctx, self.L, full_heads * (self.nope + self.vd), quantize=False,
                                              parts=per_head(self.nope + self.vd))
        self.o_proj = RowParallelLinear(ctx, full_heads * self.vd, hidden, bias=bias,
                                        what="num_attention_heads * v_head_dim")
        self.rotary = rotary
        self.attn = LatentCache(ctx, H, self.L, self.rope, scale)

    def forward(self, positions, x, meta):
        T, H, L, R = x.shape[0], self.H, self.L, self.rope
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if self.q_lora else self.q_proj(x)
        q_nope, q_pe = q.view(T, H, self.nope + R).split([self.nope, R], dim=-1)
        c, k_pe = self.kv_a_proj_with_mqa(x).split([L, R], dim=-1)
        c = self.kv_a_layernorm(c.contiguous())
        q_pe, k_pe = self.rotary(positions, q_pe.contiguous(), k_pe.reshape(T, 1, R).contiguous())
        w = self.kv_b_proj.weight.view(H, self.nope + self.vd, L)
        w_uk, w_uv = w[:, :self.nope], w[:, self.nope:]                        # [H, nope, L], [H, vd, L]
        q_lat = torch.bmm(q_nope.transpose(0, 1), w_uk).transpose(0, 1)       # [T, H, L]
        o = self.attn(torch.cat((q_lat, q_pe), dim=-1), torch.cat((c.view(T, 1, L), k_pe), dim=-1), meta)
        o = torch.bmm(o.transpose(0, 1), w_uv.transpose(1, 2)).transpose(0, 1)  # [T, H, vd]
        return self.o_proj(o.reshape(T, H * self.vd))
