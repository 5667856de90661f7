"""InternLM2 / InternLM2.5: the Llama computation under other names, with q/k/v
packed into one ``wqkv`` matrix grouped by KV head.

wqkv's output rows, for each KV head h in order: that head's q_per_kv query
heads, then its key head, then its value head, each head_dim rows.  We split it
into the separate q/k/v matrices our merged qkv layer loads.
"""
from __future__ import annotations

import re

import torch

from .fused import split_rows
from .llama import LlamaForCausalLM

_RENAMES = [
    (r"^model\.tok_embeddings\.", "model.embed_tokens."),
    (r"\.attention\.wo\.", ".self_attn.o_proj."),
    (r"\.attention_norm\.", ".input_layernorm."),
    (r"\.ffn_norm\.", ".post_attention_layernorm."),
    (r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
    (r"\.feed_forward\.w3\.", ".mlp.up_proj."),
    (r"\.feed_forward\.w2\.", ".mlp.down_proj."),
    (r"^output\.", "lm_head."),
]


def split_wqkv(t: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int, out_dim: int):
    """Split a packed wqkv tensor along its output dim into (q, k, v).

    out_dim: where the tensor keeps the output rows (fused.output_rows); its packing
    divides head_dim evenly.
    """
    g = num_heads // num_kv_heads
    n = t.shape[out_dim]
    d = n // (num_kv_heads * (g + 2))           # head_dim in this tensor's units
    x = t.movedim(out_dim, 0)
    rest = x.shape[1:]
    x = x.reshape(num_kv_heads, g + 2, d, *rest)
    q = x[:, :g].reshape(num_kv_heads * g * d, *rest)
    k = x[:, g].reshape(num_kv_heads * d, *rest)
    v = x[:, g + 1].reshape(num_kv_heads * d, *rest)
    return tuple(y.movedim(0, out_dim).contiguous() for y in (q, k, v))


class InternLM2ForCausalLM(LlamaForCausalLM):
    qkv_bias_key, o_bias_key = "bias", "bias"

    def convert(self, weights):
        cfg = self.cfg
        for name, t in weights:
            for pat, rep in _RENAMES:
                name = re.sub(pat, rep, name)
            if ".attention.wqkv." in name:
                prefix, _, pname = name.rpartition(".")
                prefix = prefix.replace(".attention.wqkv", ".self_attn")
                H, Hk, D = cfg.num_attention_heads, cfg.num_kv_heads, cfg.head_dim
                q, k, v = split_rows(pname, t, [H * D, Hk * D, Hk * D], self.ctx.quant,
                                     lambda x, dim, pack: split_wqkv(x, H, Hk, D, dim))
                yield f"{prefix}.q_proj.{pname}", q
                yield f"{prefix}.k_proj.{pname}", k
                yield f"{prefix}.v_proj.{pname}", v
                continue
            yield name, t
