"""SamplingParams, and turning a batch's parameters into the tensors Ops.sample reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence as Seq

import numpy as np
import torch

from .ops.sample import SamplingTensors


def _check(cond: bool, field: str, value, accepted: str) -> None:
    if not cond:
        raise ValueError(f"SamplingParams.{field}={value!r} is invalid; accepted: {accepted}")


@dataclass
class SamplingParams:
    """How to draw a request's completions.

    temperature 0 means greedy (top_k/top_p/min_p are then ignored).  top_k -1
    (or 0) disables top-k.  repetition_penalty follows HF (prompt and output
    tokens), presence/frequency penalties follow OpenAI (output tokens only).
    stop: strings that end the completion (not included in the text);
    stop_token_ids: token ids that end it (not included either).  seed: the
    completion's tokens depend only on the seed, not on the batch it runs in.
    logprobs: how many top log-probabilities to return per token (the sampled
    token's is always included), from the model's raw distribution.
    """

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None
    min_tokens: int = 0
    skip_special_tokens: bool = True

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.validate()

    def validate(self) -> None:
        _check(isinstance(self.n, int) and self.n >= 1, "n", self.n, "an integer >= 1")
        _check(self.max_tokens is None or (isinstance(self.max_tokens, int) and self.max_tokens >= 1),
               "max_tokens", self.max_tokens, "an integer >= 1, or None (up to the context length)")
        _check(isinstance(self.temperature, (int, float)) and self.temperature >= 0 and np.isfinite(self.temperature),
               "temperature", self.temperature, "a finite number >= 0 (0 = greedy)")
        _check(isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, "top_p", self.top_p, "(0, 1]")
        _check(isinstance(self.top_k, int) and (self.top_k == -1 or self.top_k >= 0), "top_k", self.top_k,
               "-1 or 0 (disabled) or an integer >= 1")
        _check(isinstance(self.min_p, (int, float)) and 0 <= self.min_p <= 1, "min_p", self.min_p, "[0, 1]")
        _check(isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0,
               "repetition_penalty", self.repetition_penalty, "a number > 0 (1 = off)")
        _check(isinstance(self.presence_penalty, (int, float)) and -2 <= self.presence_penalty <= 2,
               "presence_penalty", self.presence_penalty, "[-2, 2]")
        _check(isinstance(self.frequency_penalty, (int, float)) and -2 <= self.frequency_penalty <= 2,
               "frequency_penalty", self.frequency_penalty, "[-2, 2]")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", self.stop, "a non-empty string or a list of them")
        _check(all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids), "stop_token_ids",
               self.stop_token_ids, "a list of non-negative token ids")
        _check(self.seed is None or isinstance(self.seed, int), "seed", self.seed, "an integer or None")
        _check(self.logprobs is None or (isinstance(self.logprobs, int) and self.logprobs >= 0), "logprobs",
               self.logprobs, "None or an integer >= 0")
        _check(isinstance(self.min_tokens, int) and self.min_tokens >= 0, "min_tokens", self.min_tokens, "an integer >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def build_sampling_tensors(seqs: Seq, device: torch.device, offsets=None) -> SamplingTensors:
    """One row per sequence, in order.  offsets: index of the token each row draws
    (default: the sequence's current output count)."""
    ps = [s.params for s in seqs]
    temp = np.array([p.temperature for p in ps], dtype=np.float32)
    top_k = np.array([p.top_k for p in ps], dtype=np.int64)
    top_p = np.array([p.top_p for p in ps], dtype=np.float32)
    min_p = np.array([p.min_p for p in ps], dtype=np.float32)
    seeds = np.array([s.seed for s in seqs], dtype=np.int64)
    offsets = np.asarray(offsets if offsets is not None else [s.num_output for s in seqs], dtype=np.int64)
    sampled = temp > 0
    return SamplingTensors(
        temperature=torch.from_numpy(temp).to(device, non_blocking=True),
        top_k=torch.from_numpy(top_k).to(device, non_blocking=True),
        top_p=torch.from_numpy(top_p).to(device, non_blocking=True),
        min_p=torch.from_numpy(min_p).to(device, non_blocking=True),
        seeds=torch.from_numpy(seeds).to(device, non_blocking=True),
        offsets=torch.from_numpy(offsets).to(device, non_blocking=True),
        all_greedy=not sampled.any(),
        any_top_k=bool((sampled & (top_k > 0)).any()),
        any_top_p=bool((sampled & (top_p < 1)).any()),
        any_min_p=bool((sampled & (min_p > 0)).any()),
    )


def penalty_inputs(seqs: Seq, vocab: int, device: torch.device):
    """(prompt_mask bool [B,V], output_counts int32 [B,V], rep, pres, freq) for Ops.apply_penalties."""
    B = len(seqs)
    prompt_mask = torch.zeros(B, vocab, dtype=torch.bool)
    counts = torch.zeros(B, vocab, dtype=torch.int32)
    for i, s in enumerate(seqs):  # host-side; only for steps where some request uses penalties
        if s.prompt_token_ids:
            prompt_mask[i, torch.tensor(s.prompt_token_ids)] = True
        out = s.output_token_ids
        if out:
            counts[i].index_add_(0, torch.tensor(out), torch.ones(len(out), dtype=torch.int32))
    rep = torch.tensor([s.params.repetition_penalty for s in seqs], dtype=torch.float32)
    pres = torch.tensor([s.params.presence_penalty for s in seqs], dtype=torch.float32)
    freq = torch.tensor([s.params.frequency_penalty for s in seqs], dtype=torch.float32)
    return tuple(t.to(device) for t in (prompt_mask, counts, rep, pres, freq))


def top_logprobs(logits: torch.Tensor, tokens: torch.Tensor, k: int):
    """(sampled token's logprob [B], top-k ids [B,k], top-k logprobs [B,k]) from raw logits."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    chosen = lp.gather(1, tokens[:, None])[:, 0]
    if k > 0:
        vals, ids = lp.topk(k, dim=-1)
    else:
        vals = ids = torch.empty(lp.shape[0], 0, device=lp.device)
    return chosen, ids, vals
