"""Shared, session-wide: the SmolLM2 GGUF (the default model) and the models loaded from it.

Loading costs ~15 s (halinfer) and ~30 s (transformers) on two cores, so each is loaded once.
Without the file the tests skip with the reason, except where HALINFER_REQUIRE_REAL_MODEL=1
(CI), where a missing model is a failure.
"""
from __future__ import annotations


import pytest


@pytest.fixture(scope="session")
def smol32(smol_path):
    from halinfer import LLM

    return LLM(smol_path, device="cpu", dtype="float32", max_model_len=512, num_kv_blocks=512, block_size=16)


@pytest.fixture(scope="session")
def hf_smol(smol_path):
    pytest.importorskip("accelerate", reason="transformers' GGUF loading needs accelerate")
    from halinfer.testing.hf_gguf import hf_gguf_model

    return hf_gguf_model(smol_path)


@pytest.fixture(scope="session")
def hf_smol_tokenizer(smol_path):
    from halinfer.testing.hf_gguf import hf_gguf_tokenizer

    return hf_gguf_tokenizer(smol_path)
