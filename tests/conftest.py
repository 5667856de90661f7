"""Fixtures every test directory may use, and how pytest-xdist splits the suite.

Parallel runs (the README's command: ``-n 2 --dist loadfile``): each test file goes whole to
one worker process, so module-scoped checkpoints and models are built once, and
tests/conformance goes whole to one worker, in collection order, because its last file
(test_zz_declared_fallbacks.py) checks what the conformance cases before it reached in the
same process.  Everything a test writes is under its tmp_path (per worker), servers and
process groups take free ports, and the default model is fetched under a lock.
"""
from __future__ import annotations

import os

import pytest

_CONFORMANCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conformance") + os.sep


@pytest.fixture(scope="session")
def smol_path():
    pytest.importorskip("gguf", reason='the GGUF tests need the demo extra: pip install -e ".[demo]"')
    from halinfer.default_model import DefaultModelMissing, cache_dir, default_model_path

    try:
        try:
            return default_model_path(fetch=False)
        except DefaultModelMissing:
            pass
        # not here yet: one process fetches it (xdist workers may ask at once), the others wait and find it
        import fcntl

        os.makedirs(cache_dir(), exist_ok=True)
        with open(os.path.join(cache_dir(), ".fetch.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return default_model_path(fetch=True)
    except DefaultModelMissing as e:
        if os.environ.get("HALINFER_REQUIRE_REAL_MODEL") == "1":
            raise
        pytest.skip(str(e))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with tests/conformance as one unit (see the module docstring)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LoadFileConformanceWhole(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            path = os.path.join(str(config.rootpath), scope)
            return _CONFORMANCE if path.startswith(_CONFORMANCE) else scope

    return LoadFileConformanceWhole(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Tell each worker whether it gets tests/conformance whole (a worker's own config says dist "no")."""
    node.workerinput["halinfer_conformance_whole"] = node.config.getvalue("dist") == "loadfile"
