"""Ascend decode graphs: replayed steps equal eager steps only because
before_replay refreshes FIA's host-side lengths (vendors/ascend.md §10)."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.graph import GraphAPI

from .conftest import make_ascend
from .emulation.graph_tape import CaptureError
from .minimodel import MiniModel, run


@pytest.mark.parametrize("head_dim", [128, 64], ids=["TND_d128", "BSND_d64"])
def test_graph_decode_equals_eager_decode(npu_emulation, head_dim):
    b = make_ascend(npu_emulation)
    m = MiniModel(b, head_dim=head_dim, block_size=128)
    eager, _ = run(b, m, "eager")
    graph, runner = run(b, m, "graph")
    assert runner.captured_sizes == (1, 2, 4, 8)
    # two attention layers per captured graph, each an FIA launch to refresh
    assert all(len(g.records) == 2 for g in runner.graphs.values())
    for i, (e, g) in enumerate(zip(eager, graph)):
        torch.testing.assert_close(g, e, atol=2e-3, rtol=2e-3, msg=lambda s: f"step {i}: {s}")


def test_replay_without_the_update_blocks_on_the_graphs_event(npu_emulation, monkeypatch):
    b = make_ascend(npu_emulation)
    m = MiniModel(b, head_dim=128, block_size=128)
    from halinfer.plugins.ascend.graph import AscendGraphAPI

    monkeypatch.setattr(AscendGraphAPI, "before_replay", GraphAPI.before_replay)
    with pytest.raises(CaptureError, match="wait forever"):
        run(b, m, "graph")


def test_stale_lengths_give_wrong_attention(npu_emulation, monkeypatch):
    """Record the event but re-issue FIA with the captured lengths: the replay reads
    only the capture-time KV lengths and the result differs from eager."""
    b = make_ascend(npu_emulation)
    m = MiniModel(b, head_dim=128, block_size=128)
    eager, _ = run(b, m, "eager")
    from halinfer.plugins.ascend import graph as agraph

    def stale(self, graph, meta):
        npu = self.npu.npu
        us = npu.Stream()
        with npu.stream(us):
            for r in graph.records:
                npu.graph_task_update_begin(us, r.handle)
                self.npu.npu_fused_infer_attention_score.out(*r.args, **r.kwargs)
                npu.graph_task_update_end(us)
                r.event.record(us)

    monkeypatch.setattr(agraph.AscendGraphAPI, "before_replay", stale)
    graph, _ = run(b, m, "graph")
    assert torch.allclose(graph[0], eager[0], atol=2e-3, rtol=2e-3)        # the prefill step is eager
    assert not torch.allclose(graph[1], eager[1], atol=2e-3, rtol=2e-3)    # the first replayed decode step


def test_300i_duo_decode_graph_needs_no_update(npu_emulation):
    b = make_ascend(npu_emulation, soc="310P")
    assert b.graph_modes == ("graph",) and b.dtypes == (torch.float16,)
    m = MiniModel(b, head_dim=128, block_size=128)
    eager, _ = run(b, m, "eager")
    graph, runner = run(b, m, "graph")
    assert all(len(g.records) == 0 for g in runner.graphs.values())   # ATB reads device lengths
    for e, g in zip(eager, graph):
        torch.testing.assert_close(g, e, atol=2e-3, rtol=2e-3)


def test_300i_duo_declares_graph_decode_only(npu_emulation):
    """lmdeploy runs the 300I Duo in graph mode only: the engine refuses enforce_eager from graph_modes."""
    b = make_ascend(npu_emulation, soc="310P")
    assert "eager" not in b.graph_modes and b.graph_api(torch.device("cpu")) is not None


def test_host_sync_inside_a_capture_is_refused(npu_emulation):
    b = make_ascend(npu_emulation)
    api = b.graph_api(torch.device("cpu"))
    g = api.new_graph()
    x = torch.ones(3)
    with pytest.raises(CaptureError, match="host"):
        with api.capture(g, api.pool_handle()):
            x.sum().item()
