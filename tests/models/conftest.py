"""Tiny checkpoints shared by the model tests (built once per session)."""
from __future__ import annotations

import pytest

from halinfer.testing.tiny import save_tiny_model


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    cache: dict[str, str] = {}

    def get(family: str, **overrides) -> str:
        key = family + repr(sorted(overrides.items()))
        if key not in cache:
            path = tmp_path_factory.mktemp(family.replace("-", "_"))
            cache[key] = save_tiny_model(family, str(path), seed=len(cache), **overrides)
        return cache[key]

    return get
