from __future__ import annotations

import pytest

from halinfer import LLM
from halinfer.testing.tiny import save_tiny_model


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("engine_llama")), seed=7)


@pytest.fixture(scope="session")
def make_llm(llama_dir):
    def make(**kw):
        kw.setdefault("device", "cpu")
        kw.setdefault("dtype", "float32")
        kw.setdefault("block_size", 4)
        kw.setdefault("num_kv_blocks", 256)
        return LLM(llama_dir, **kw)

    return make


@pytest.fixture(scope="session")
def llm(make_llm):
    return make_llm()
