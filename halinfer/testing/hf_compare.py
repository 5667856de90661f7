"""Comparing halinfer with HF transformers on the same checkpoint.

Used by the equivalence tests (every backend, every family) and by ``halinfer demo``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

# A reference directory may carry this file: it names how the transformers model must be
# adapted to be the reference of a family transformers lacks.  {"attention": "alibi"}:
# a Llama checkpoint run with ALiBi instead of rotary (testing/alibi_reference.py).
REFERENCE_MARKER = "halinfer_reference.json"


@dataclass
class HFRun:
    prompt_logits: torch.Tensor      # float32 [P, V]
    tokens: list[int]                # greedy continuation
    step_logits: list[torch.Tensor]  # float32 [V] per generated token (the logits it was drawn from)


def hf_model(model_dir: str, dtype: torch.dtype = torch.float32, reference_dir: str | None = None):
    """The transformers model (from reference_dir when the checkpoint's own family
    has no transformers implementation and a converted twin is used)."""
    from transformers import AutoModelForCausalLM

    path = reference_dir or model_dir
    marker = os.path.join(path, REFERENCE_MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            how = json.load(f)
        if how != {"attention": "alibi"}:
            raise ValueError(f"{marker}: unknown reference adaptation {how}")
        from . import alibi_reference

        return alibi_reference.load(path, dtype)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return m.eval()


@torch.inference_mode()
def hf_greedy(model, prompt: list[int], n: int) -> HFRun:
    ids = torch.tensor([prompt])
    prompt_logits = model(ids).logits[0].float()
    # No EOS at all (rather than min_new_tokens, which masks EOS out of the argmax):
    # the continuation is the plain argmax chain, as with halinfer's ignore_eos.
    # (eos_token_id=None would be refilled from the model config; an empty list is not.)
    out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=[], pad_token_id=0,
                         return_dict_in_generate=True, output_logits=True)
    tokens = out.sequences[0, len(prompt):].tolist()
    return HFRun(prompt_logits, tokens, [lg[0].float() for lg in out.logits])


def halinfer_greedy(llm, prompts: list[list[int]], n: int):
    """(per prompt: tokens, per-step logits) from one batched generate() call."""
    from ..core.sampling import SamplingParams

    runner = llm.engine.runner
    runner.logit_log = []
    try:
        outs = llm.generate(prompt_token_ids=prompts, sampling_params=SamplingParams(
            temperature=0, max_tokens=n, ignore_eos=True), use_tqdm=False)
        log = runner.logit_log
    finally:
        runner.logit_log = None
    per_req: dict[str, list[torch.Tensor]] = {}
    for step in log:
        for rid, _idx, lg in step:
            per_req.setdefault(rid, []).append(lg)
    return [(o.outputs[0].token_ids, per_req[o.request_id]) for o in outs]


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the spread of b (logits are shift-sensitive only in scale)."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6))


def assert_matches_transformers(llm, hf, prompts: list[list[int]], n_tokens: int = 32, tol: float = 1e-4) -> None:
    """The equivalence every family test asserts: prompt logits at every position,
    every decode step's logits (all prompts batched together), and the greedy tokens."""
    refs = [hf_greedy(hf, p, n_tokens) for p in prompts]
    for p, ref in zip(prompts, refs):
        err = max_rel_err(llm.engine.prompt_logits(p), ref.prompt_logits)
        assert err < tol, f"prompt logits differ (relative error {err:.2e}) for a prompt of {len(p)} tokens"
    got = halinfer_greedy(llm, prompts, n_tokens)
    for p, ref, (tokens, step_logits) in zip(prompts, refs, got):
        assert len(step_logits) == n_tokens
        for i, (mine, theirs) in enumerate(zip(step_logits, ref.step_logits)):
            err = max_rel_err(mine, theirs)
            assert err < tol, f"decode step {i} logits differ (relative error {err:.2e}), prompt of {len(p)} tokens"
        assert tokens == ref.tokens, f"greedy tokens differ for a prompt of {len(p)} tokens"


def random_prompts(seed: int, vocab: int, lengths=(29, 5, 17)) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=n).tolist() for n in lengths]


def assert_close_to_transformers(llm, hf, prompts: list[list[int]], n_tokens: int = 32, tol: float = 5e-2,
                                 tie: float = 5e-2) -> None:
    """The equivalence for inexact runs (bf16/fp16, int8 KV): logits within ``tol``
    (relative to their spread) and the same greedy tokens until a step where the two
    picks are a near-tie in the reference (within ``tie`` of the spread); past such
    a step the continuations legitimately differ and are not compared."""
    refs = [hf_greedy(hf, p, n_tokens) for p in prompts]
    for p, ref in zip(prompts, refs):
        err = max_rel_err(llm.engine.prompt_logits(p).cpu(), ref.prompt_logits.cpu())
        assert err < tol, f"prompt logits differ (relative error {err:.2e}) for a prompt of {len(p)} tokens"
    got = halinfer_greedy(llm, prompts, n_tokens)
    for p, ref, (tokens, step_logits) in zip(prompts, refs, got):
        for i, (mine, theirs) in enumerate(zip(step_logits, ref.step_logits)):
            theirs = theirs.cpu()
            err = max_rel_err(mine.cpu(), theirs)
            assert err < tol, f"decode step {i} logits differ (relative error {err:.2e})"
            if tokens[i] != ref.tokens[i]:
                spread = theirs.abs().max().item()
                gap = (theirs[ref.tokens[i]] - theirs[tokens[i]]).item()
                assert gap <= tie * spread, (f"step {i}: halinfer chose {tokens[i]}, the reference {ref.tokens[i]} "
                                             f"with a margin {gap:.3g} that is no near-tie")
                break
