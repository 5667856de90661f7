"""Sampling references: penalties, temperature / top-k / top-p / min-p, and
per-request seeded draws that do not depend on the rest of the batch.

Randomness is counter-based: the uniform number for (request seed, step, token id)
is a hash of those three integers.  A request therefore draws the same tokens
whatever else shares its batch, on any device that has int64 tensor ops, with no
per-request generator objects and no host sync.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_M32 = 0xFFFFFFFF


@dataclass
class SamplingTensors:
    """Per-row sampling parameters for a batch of B rows (device tensors).

    temperature  float32 [B]   0 = greedy
    top_k        int64 [B]     <= 0 or >= vocab: off
    top_p        float32 [B]   1 = off
    min_p        float32 [B]   0 = off
    seeds        int64 [B]     the request's seed
    offsets      int64 [B]     the index of the token being drawn (0 for the first output token)
    all_greedy, any_top_k, any_top_p, any_min_p: host flags that let a step skip work.
    """

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    seeds: torch.Tensor
    offsets: torch.Tensor
    all_greedy: bool
    any_top_k: bool
    any_top_p: bool
    any_min_p: bool


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # 32-bit integer finaliser (values kept below 2**32, products below 2**63).
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


def uniform_noise(seeds: torch.Tensor, offsets: torch.Tensor, vocab: int) -> torch.Tensor:
    """float32 [B, vocab] in (0, 1), a pure function of (seed, offset, token id)."""
    h = _mix32(seeds & _M32)
    h = _mix32(h ^ ((seeds >> 32) & _M32))
    h = _mix32(h ^ (offsets & _M32))
    idx = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    r = _mix32(h[:, None] ^ (_mix32(idx) * 0x61C88647 & _M32))  # constant < 2**31: no int64 overflow
    r = _mix32(r ^ 0x5BD1E995)
    return ((r >> 8).float() + 0.5) * (1.0 / (1 << 24))


def apply_penalties(logits, prompt_mask, output_counts, repetition, presence, frequency):
    """In place on float32 logits [B, V].

    prompt_mask bool [B, V]: token occurs in the prompt; output_counts int [B, V]:
    occurrences in the output so far.  repetition (HF/CTRL): for tokens seen in
    prompt or output, logit / p if positive else logit * p.  presence/frequency
    (OpenAI): subtract presence * [count > 0] + frequency * count, over the output only.
    """
    seen = prompt_mask | (output_counts > 0)
    rep = repetition[:, None].expand_as(logits)
    pen = torch.where(logits > 0, logits / rep, logits * rep)
    logits.copy_(torch.where(seen, pen, logits))
    logits -= presence[:, None] * (output_counts > 0).float() + frequency[:, None] * output_counts.float()
    return logits


def filter_logits(logits: torch.Tensor, st: SamplingTensors) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p masking (to -inf).  float32 [B, V]."""
    temp = torch.where(st.temperature > 0, st.temperature, torch.ones_like(st.temperature))
    logits = logits / temp[:, None]
    V = logits.shape[-1]
    if st.any_top_k or st.any_top_p:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        drop = torch.zeros_like(sorted_logits, dtype=torch.bool)
        if st.any_top_k:
            k = torch.where((st.top_k <= 0) | (st.top_k >= V), torch.full_like(st.top_k, V), st.top_k)
            drop |= torch.arange(V, device=logits.device)[None, :] >= k[:, None]
        if st.any_top_p:
            probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
            before = probs.cumsum(-1) - probs          # mass strictly above this token
            drop |= before >= st.top_p[:, None]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(1, order, sorted_logits)
    if st.any_min_p:
        probs = torch.softmax(logits, dim=-1)
        thresh = probs.amax(-1, keepdim=True) * st.min_p[:, None]
        logits = logits.masked_fill(probs < thresh, float("-inf"))
    return logits


def sample(logits: torch.Tensor, st: SamplingTensors) -> torch.Tensor:
    """Draw one token per row from float32 logits [B, V] (penalties already applied).

    Rows with temperature 0 take the argmax.  Others take the Gumbel-max draw
    argmax(filtered_logits - log(-log u)), u = uniform_noise(seed, offset, token):
    an exact sample from softmax(filtered_logits).  Returns int64 [B].
    """
    greedy = logits.argmax(-1)
    if st.all_greedy:
        return greedy
    filtered = filter_logits(logits, st)
    u = uniform_noise(st.seeds, st.offsets, logits.shape[-1])
    drawn = (filtered - torch.log(-torch.log(u))).argmax(-1)
    return torch.where(st.temperature > 0, drawn, greedy)
