"""gpt-oss: attention with q/k/v/o biases, a learned per-head sink logit in every
softmax denominator, sliding-window and full layers alternating (layer_types), YaRN
rope; a MoE in every layer whose router has a bias, softmax over the top-k logits
(= softmax renormalised over the chosen experts), and experts with biases and the
clamped SwiGLU (Ops.swiglu_oai).

Checkpoint layout: experts.gate_up_proj [E, H, 2I] with gate and up columns
interleaved (gate at even columns) and gate_up_proj_bias [E, 2I] likewise;
experts.down_proj [E, I, H].  Loading transposes them to Ops.fused_moe's
[E, out, in] and de-interleaves to gate-first.  MXFP4-packed checkpoints
(``*_blocks`` / ``*_scales``) are not read: use a bf16 export.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.ops.activation import swiglu_oai
from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import Rotary
from .llama import LlamaAttention, rope_spec
from .moe import ExpertLoading, RouteSpec, SparseMoE, num_experts
from .parallel import split_heads


class GptOssAttention(LlamaAttention):
    def __init__(self, ctx, cfg, i, rotary):
        b = bool(cfg.get("attention_bias", True))
        super().__init__(ctx, cfg, i, rotary, qkv_bias=b, o_bias=b, qk_norm=False)
        self.sinks = nn.Parameter(torch.empty(self.H, dtype=ctx.dtype), requires_grad=False)  # this rank's heads
        self.attn.attn_kw["sinks"] = self.sinks


def _deinterleave(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., 2I (gate, up, gate, up, ...), ...] -> [..., 2I (gates, then ups), ...] along dim."""
    idx = torch.arange(t.shape[dim])
    return t.index_select(dim, torch.cat((idx[0::2], idx[1::2])))


class GptOssForCausalLM(ExpertLoading, CausalLM):
    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        alpha, limit = cfg.get("swiglu_alpha", 1.702), cfg.get("swiglu_limit", 7.0)
        defaults = swiglu_oai.__defaults__
        if (alpha, limit) != defaults:
            raise ValueError(f"gpt-oss SwiGLU alpha={alpha}, limit={limit}: Ops.swiglu_oai inside fused_moe "
                             f"implements alpha, limit = {defaults}")
        rotary = Rotary(ctx, rope_spec(cfg, cfg.head_dim))
        route = RouteSpec(top_k=cfg.num_experts_per_tok, scoring="softmax", renormalize=True, router_bias=True)

        def layer(i):
            moe = SparseMoE(ctx, cfg.hidden_size, num_experts(cfg), cfg.intermediate_size, route,
                            activation="swiglu_oai", expert_bias=True)
            return DecoderLayer(ctx, cfg, GptOssAttention(ctx, cfg, i, rotary), moe)

        self.model = DecoderModel(ctx, cfg, layer)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)

    def convert(self, weights):
        for name, t in weights:
            name = name.replace(".mlp.router.", ".mlp.gate.")
            if name.endswith(("_blocks", "_scales")):
                raise NotImplementedError(f"{name}: MXFP4-packed gpt-oss experts are not supported; use a bf16 "
                                          "export of the checkpoint")
            if name.endswith(".experts.gate_up_proj"):
                yield name[: -len("gate_up_proj")] + "w13", _deinterleave(t.transpose(1, 2), 1)
            elif name.endswith(".experts.gate_up_proj_bias"):
                yield name[: -len("gate_up_proj_bias")] + "w13_bias", _deinterleave(t, 1)
            elif name.endswith(".experts.down_proj"):
                yield name[: -len("down_proj")] + "w2", t.transpose(1, 2)
            elif name.endswith(".experts.down_proj_bias"):
                yield name[: -len("down_proj_bias")] + "w2_bias", t
            elif name.endswith(".self_attn.sinks"):  # one per query head: this rank's heads
                q0 = split_heads(self.ctx.tp, self.cfg.num_attention_heads, self.cfg.num_kv_heads).q_start
                yield name, t.narrow(0, q0, t.shape[0] // self.ctx.tp.size)
            else:
                yield name, t
