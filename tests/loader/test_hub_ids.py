"""Hub ids resolve through huggingface_hub's local cache (a layout built here; no network)."""
from __future__ import annotations

import os
import shutil

import pytest

from halinfer import LLM, SamplingParams
from halinfer.testing.tiny import save_tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """HF_HOME with models--tiny-org--tiny-llama laid out as huggingface_hub caches it."""
    src = save_tiny_model("llama", str(tmp_path / "src"), seed=5)
    repo = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-llama"
    snap = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for name in os.listdir(src):  # blobs by content name, snapshot entries as symlinks, as the hub cache does
        blob = repo / "blobs" / f"blob-{name}"
        shutil.copy(os.path.join(src, name), blob)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return src


def test_hub_id_loads_from_the_local_cache(hub_home):
    sp = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    kw = dict(device="cpu", dtype="float32", num_kv_blocks=64, block_size=4, max_model_len=128)
    by_id = LLM("tiny-org/tiny-llama", **kw).generate(["hello"], sp, use_tqdm=False)[0]
    by_path = LLM(hub_home, **kw).generate(["hello"], sp, use_tqdm=False)[0]
    assert by_id.outputs[0].token_ids == by_path.outputs[0].token_ids


def test_unknown_hub_id_offline_is_a_clear_error(hub_home):
    with pytest.raises(FileNotFoundError, match=r"'nobody/nothing' is not a local path and not in the hub cache"):
        LLM("nobody/nothing", device="cpu")


def test_neither_path_nor_id_lists_what_is_accepted():
    with pytest.raises(FileNotFoundError, match=r"does not exist as a local path and is not a Hugging Face "
                                                r"hub id.*\.gguf"):
        LLM("./no/such/dir", device="cpu")
