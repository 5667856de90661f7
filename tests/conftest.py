"""Fixtures every test directory may use."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def smol_path():
    pytest.importorskip("gguf", reason='the GGUF tests need the demo extra: pip install -e ".[demo]"')
    from halinfer.default_model import DefaultModelMissing, default_model_path

    try:
        return default_model_path(fetch=True)
    except DefaultModelMissing as e:
        if os.environ.get("HALINFER_REQUIRE_REAL_MODEL") == "1":
            raise
        pytest.skip(str(e))
