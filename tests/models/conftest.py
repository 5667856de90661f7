"""Tiny checkpoints shared by the model tests (each recipe built once per session)."""
from __future__ import annotations

import pytest
import torch

from halinfer.testing.cases import build_case

# Tiny models gain nothing from intra-op threads, and on a busy CPU every small op then
# waits on OpenMP's spinning threads: with one thread these tests run several times faster
# (the 16 dense-family cases: 170 s -> 30 s on 2 cores at load 7).
torch.set_num_threads(1)


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


def pytest_sessionfinish(session, exitstatus):
    from .support_records import write_records

    for path in write_records():
        print(f"\nsupport record written: {path}")
