"""Tiny checkpoints shared by the model tests (each recipe built once per session)."""
from __future__ import annotations

import pytest

from halinfer.testing.cases import build_case


@pytest.fixture(scope="session")
def case_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    cache: dict = {}
    built: dict = {}

    def get(case_id: str) -> tuple[str, str]:
        if case_id not in built:
            built[case_id] = build_case(case_id, str(root), cache)
        return built[case_id]

    return get
