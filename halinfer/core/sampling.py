"""SamplingParams, and turning a batch's parameters into the tensors Ops.sample reads."""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch



# Documented upper bounds: n completions per request, and top log-probabilities per token
# (OpenAI's top_logprobs goes to 20; vLLM's default max_logprobs is 20 too).
MAX_N = 256
MAX_LOGPROBS = 20
_SEED_BOUND = 2**63  # seeds feed an int64 hash


def _check(cond: bool, field: str, value, accepted: str) -> None:
    if not cond:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise ValueError(f"SamplingParams.{field}={shown} is invalid; accepted: {accepted}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class SamplingParams:
    """How to draw a request's completions.

    temperature 0 means greedy (top_k/top_p/min_p are then ignored).  top_k -1
    (or 0) disables top-k.  repetition_penalty follows HF (prompt and output
    tokens), presence/frequency penalties follow OpenAI (output tokens only).
    stop: strings that end the completion (not included in the text).
    stop_token_ids: token ids that end it; as in vLLM, the stop token is part of the
    output's token_ids, and of its text unless it is a special token that
    skip_special_tokens drops (EOS is treated the same way).  seed: the completion's
    tokens depend only on the seed (0 <= seed < 2**63), not on the batch it runs
    in.  logprobs: how many top log-probabilities to return per token (0..20; the
    sampled token's is always included), from the model's raw distribution.
    n: completions per request (1..256).
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
        if self.stop is None:
            self.stop = []
        if self.stop_token_ids is None:
            self.stop_token_ids = []
        self.validate()

    def validate(self) -> None:
        """Check every field (again: fields may be set after construction)."""
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        _check(isinstance(self.stop, (list, tuple)), "stop", self.stop, "a non-empty string or a list of them")
        _check(isinstance(self.stop_token_ids, (list, tuple)), "stop_token_ids", self.stop_token_ids,
               "a list of non-negative token ids")
        self.stop, self.stop_token_ids = list(self.stop), list(self.stop_token_ids)
        _check(_is_int(self.n) and 1 <= self.n <= MAX_N, "n", self.n, f"an integer in [1, {MAX_N}]")
        _check(self.max_tokens is None or (_is_int(self.max_tokens) and self.max_tokens >= 1),
               "max_tokens", self.max_tokens, "an integer >= 1, or None (up to the context length)")
        _check(_is_num(self.temperature) and self.temperature >= 0 and np.isfinite(self.temperature),
               "temperature", self.temperature, "a finite number >= 0 (0 = greedy)")
        _check(_is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p, "(0, 1]")
        _check(_is_int(self.top_k) and (self.top_k == -1 or self.top_k >= 0), "top_k", self.top_k,
               "-1 or 0 (disabled) or an integer >= 1")
        _check(_is_num(self.min_p) and 0 <= self.min_p <= 1, "min_p", self.min_p, "[0, 1]")
        _check(_is_num(self.repetition_penalty) and np.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
               "repetition_penalty", self.repetition_penalty, "a number > 0 (1 = off)")
        _check(_is_num(self.presence_penalty) and -2 <= self.presence_penalty <= 2,
               "presence_penalty", self.presence_penalty, "[-2, 2]")
        _check(_is_num(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
               "frequency_penalty", self.frequency_penalty, "[-2, 2]")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", self.stop, "a non-empty string or a list of them")
        _check(all(_is_int(t) and t >= 0 for t in self.stop_token_ids), "stop_token_ids",
               self.stop_token_ids, "a list of non-negative token ids")
        _check(self.seed is None or (_is_int(self.seed) and 0 <= self.seed < _SEED_BOUND), "seed", self.seed,
               "None or an integer in [0, 2**63)")
        _check(self.logprobs is None or (_is_int(self.logprobs) and 0 <= self.logprobs <= MAX_LOGPROBS), "logprobs",
               self.logprobs, f"None or an integer in [0, {MAX_LOGPROBS}]")
        _check(_is_int(self.min_tokens) and self.min_tokens >= 0, "min_tokens", self.min_tokens, "an integer >= 0")
        _check(self.max_tokens is None or self.min_tokens <= self.max_tokens, "min_tokens", self.min_tokens,
               f"at most max_tokens ({self.max_tokens})")
        _check(isinstance(self.ignore_eos, bool), "ignore_eos", self.ignore_eos, "True or False")
        _check(isinstance(self.skip_special_tokens, bool), "skip_special_tokens", self.skip_special_tokens,
               "True or False")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def top_logprobs(logits: torch.Tensor, tokens: torch.Tensor, k: int):
    """(sampled token's logprob [B], top-k ids [B,k], top-k logprobs [B,k]) from raw logits."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    chosen = lp.gather(1, tokens[:, None])[:, 0]
    if k > 0:
        vals, ids = lp.topk(k, dim=-1)
    else:
        vals = ids = torch.empty(lp.shape[0], 0, device=lp.device)
    return chosen, ids, vals
