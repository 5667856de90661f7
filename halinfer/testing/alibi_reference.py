"""A transformers reference for Llama-with-ALiBi families (Baichuan 13B, Baichuan2-13B).

transformers has no Llama variant with ALiBi (Bloom, MPT and Falcon use ALiBi, but
with LayerNorm and non-gated MLPs, so no checkpoint maps onto them exactly).  The
reference is therefore transformers' own LlamaForCausalLM with two changes, both
through public means and both stated here:

* its rotary embedding is made the identity: the inverse frequencies are zeroed, so
  cos = 1 and sin = 0 at every position;
* its attention is a function registered with transformers' ``AttentionInterface``
  that adds the ALiBi bias ``slope_h * (j - i)`` (key position j, query position i)
  to the scaled scores before the causal softmax.

RMSNorm, the SwiGLU MLP, the projections, the KV cache and the generation loop stay
transformers' code.  The slopes are computed here from the ALiBi paper's recipe
(as Baichuan's ``_get_interleave`` does), not taken from halinfer's op reference.
"""
from __future__ import annotations

import math

import torch

ATTENTION_NAME = "halinfer_alibi_reference"


def alibi_slopes(n_heads: int) -> torch.Tensor:
    def power_of_two(m: int) -> list[float]:
        start = 2.0 ** (-8.0 / m)
        return [start ** (i + 1) for i in range(m)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads), dtype=torch.float64)
    p = 2 ** math.floor(math.log2(n_heads))
    # Not a power of two: the p slopes of p heads, then every other slope of 2p heads.
    return torch.tensor(power_of_two(p) + power_of_two(2 * p)[0::2][: n_heads - p], dtype=torch.float64)


def alibi_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """query [B, H, q, D], key/value [B, Hk, k, D] -> ([B, q, H, D], probs).

    One unpadded sequence per call (the equivalence tests generate one prompt at a
    time), so the queries are the last q of the k positions and the causal mask is
    built here from positions rather than read from ``attention_mask``.
    """
    B, H, q, _ = query.shape
    assert B == 1, "the ALiBi reference runs one sequence at a time"
    n = key.shape[2]
    key = key.repeat_interleave(H // key.shape[1], dim=1)
    value = value.repeat_interleave(H // value.shape[1], dim=1)
    scores = torch.matmul(query.double(), key.double().transpose(2, 3)) * scaling
    qpos = torch.arange(n - q, n, device=query.device)[:, None]
    kpos = torch.arange(n, device=query.device)[None, :]
    scores = scores + alibi_slopes(H).to(query.device)[None, :, None, None] * (kpos - qpos)
    scores = scores.masked_fill(kpos > qpos, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value.double()).to(query.dtype)
    return out.transpose(1, 2).contiguous(), probs.to(query.dtype)


def load(model_dir: str, dtype: torch.dtype = torch.float32):
    from transformers import AttentionInterface, AutoModelForCausalLM

    AttentionInterface.register(ATTENTION_NAME, alibi_attention)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=ATTENTION_NAME)
    assert type(model).__name__ == "LlamaForCausalLM", "the ALiBi reference is a Llama checkpoint"
    rot = model.model.rotary_emb
    assert rot.rope_type == "default", "a scaled rotary table would not stay the identity"
    rot.inv_freq.zero_()
    rot.original_inv_freq.zero_()
    return model.eval()
