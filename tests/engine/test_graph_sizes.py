"""The core's default decode-graph buckets: every batch up to max_num_seqs has a bucket, the
padding a bucket adds stays small, and max_num_seqs itself is captured."""
import pytest

from halinfer.core.backend import Backend


@pytest.mark.parametrize("cap", [1, 3, 8, 100, 256, 257, 300, 513, 700, 1024, 1500])
def test_every_batch_has_a_close_bucket(cap):
    sizes = Backend.graph_capture_sizes(Backend.__new__(Backend), cap)
    assert sizes == sorted(set(sizes)) and sizes[-1] == cap and sizes[0] == 1
    for b in range(1, cap + 1):
        bucket = next(s for s in sizes if s >= b)
        assert bucket - b < max(8, b // 8), (b, bucket)   # at most 1/8 of the batch is padding


def test_unset_cap_takes_the_backends_default_and_a_set_one_stays(llama_dir, monkeypatch):
    from halinfer import LLM
    from halinfer.plugins.cpu.backend import CpuBackend

    monkeypatch.setattr(CpuBackend, "default_max_num_seqs", lambda self, index: 48)
    assert LLM(llama_dir, device="cpu", dtype="float32").engine.core.scheduler.max_num_seqs == 48
    assert LLM(llama_dir, device="cpu", dtype="float32", max_num_seqs=5).engine.core.scheduler.max_num_seqs == 5
    monkeypatch.undo()
    assert LLM(llama_dir, device="cpu", dtype="float32").engine.core.cfg.max_num_seqs == 256
