"""Comparing halinfer with HF transformers on the same checkpoint.

Used by the equivalence tests (every backend, every family).
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
    # Eager attention: transformers' plain reference path.  Its SDPA path dropped Gemma 2's
    # attention soft-cap silently before 5.18 (Gemma2 claimed SDPA support), which made the
    # reference wrong on the GPU image's transformers 5.17.
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
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

    from .logit_log import record_logits

    with record_logits(llm) as per_req:
        outs = llm.generate(prompt_token_ids=prompts, sampling_params=SamplingParams(
            temperature=0, max_tokens=n, ignore_eos=True), use_tqdm=False)
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


def mean_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean() / b.float().abs().max().clamp(min=1e-6))


@torch.inference_mode()
def assert_close_to_transformers(llm, hf_exact, hf_lowp, prompts: list[list[int]], n_tokens: int = 24,
                                 slack: float = 2.0) -> None:
    """The equivalence for inexact runs (bf16/fp16 compute, int8 KV).

    ``hf_exact`` is transformers computing in float32 with the weights rounded as
    halinfer holds them; ``hf_lowp`` is transformers computing in the run's dtype.
    halinfer must be about as accurate as transformers itself: its mean (and median)
    logit error against the exact values, over every prompt position and decode step
    of all prompts, at most ``slack`` times transformers' own (plus 1e-3); and its greedy tokens
    equal the exact ones until a step where the two picks are within the noise
    transformers itself shows (past which continuations legitimately differ).
    """
    all_mine: list[float] = []
    all_theirs: list[float] = []
    runs: list[str] = []
    for p in prompts:
        ref = hf_greedy(hf_exact, p, n_tokens)
        full = torch.tensor([p + ref.tokens])
        exact = hf_exact(full).logits[0].float()          # every position of prompt + continuation
        lowp = hf_lowp(full).logits[0].float()
        theirs = [mean_rel_err(lowp[j], exact[j]) for j in range(exact.shape[0])]
        noise_max = max(max_rel_err(lowp[j], exact[j]) for j in range(exact.shape[0]))
        P = len(p)
        prompt = llm.engine.prompt_logits(p).cpu()
        mine = [mean_rel_err(prompt[j], exact[j]) for j in range(P)]
        (tokens, step_logits), = halinfer_greedy(llm, [p], n_tokens)
        diverged = None
        for i, (mine_i, ref_i) in enumerate(zip(step_logits, ref.step_logits)):
            mine.append(mean_rel_err(mine_i.cpu(), exact[P - 1 + i]))
            if tokens[i] != ref.tokens[i]:
                diverged = i
                spread = ref_i.abs().max().item()
                gap = (ref_i[ref.tokens[i]] - ref_i[tokens[i]]).item()
                assert gap <= slack * noise_max * spread, (
                    f"step {i}: halinfer chose {tokens[i]}, the exact reference {ref.tokens[i]}, with a margin "
                    f"{gap:.3g} beyond transformers' own noise ({noise_max * spread:.3g})")
                break
        n = len(mine)
        all_mine += mine
        all_theirs += theirs[:n]
        runs.append(f"prompt of {P} tokens + {n - P} decode steps"
                    f"{'' if diverged is None else ' (diverged at a near-tie)'}: mean {sum(mine) / n:.2e} vs "
                    f"transformers' {sum(theirs[:n]) / n:.2e}")
    # Aggregates over every position of every prompt, not per position or per prompt: a
    # low-precision MoE router flips a choice now and then (transformers' own run does so
    # too, at other positions), which swings one prompt's mean; a bug is systematic.
    n = len(all_mine)
    mean_mine, mean_theirs = sum(all_mine) / n, sum(all_theirs) / n
    assert mean_mine <= slack * mean_theirs + 1e-3, (
        f"mean logit error {mean_mine:.2e} > {slack} x transformers' own {mean_theirs:.2e}; " + "; ".join(runs))
    med_mine, med_theirs = sorted(all_mine)[n // 2], sorted(all_theirs)[n // 2]
    assert med_mine <= slack * med_theirs + 1e-3, (
        f"median position error {med_mine:.2e} > {slack} x transformers' own {med_theirs:.2e}; " + "; ".join(runs))
