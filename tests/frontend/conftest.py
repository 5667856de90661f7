from __future__ import annotations

import pytest

from halinfer.testing.tiny import save_tiny_model

ENGINE_KW = dict(device="cpu", dtype="float32", block_size=4, num_kv_blocks=128)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("frontend_llama")), seed=11)


@pytest.fixture(scope="session")
def llm(tiny_dir):
    from halinfer import LLM

    return LLM(tiny_dir, **ENGINE_KW)
