"""Every model case against HF transformers, float32, on the CPU backend.

For each: the logits at every prompt position, the logits of every decode step,
and 32 greedy tokens must match.  Families with no transformers implementation
are converted from a transformers checkpoint with the same computation
(halinfer/testing/convert.py says why each is equivalent).  The cases live in
halinfer/testing/cases.py.
"""
from __future__ import annotations

import zlib

import pytest

from halinfer import LLM
from halinfer.testing.cases import CASES
from halinfer.testing.hf_compare import assert_matches_transformers, hf_model, random_prompts


@pytest.mark.parametrize("case", list(CASES))
def test_case_matches_transformers(case, case_dirs):
    model_dir, ref_dir = case_dirs(case)
    llm = LLM(model_dir, device="cpu", dtype="float32", num_kv_blocks=160, block_size=8)
    prompts = random_prompts(zlib.crc32(case.encode()), llm.engine.vocab_size)
    assert_matches_transformers(llm, hf_model(model_dir, reference_dir=ref_dir), prompts, tol=CASES[case].tol)
