"""The capture-replay emulation: device buffers are read at replay, host values were frozen
at capture, task updates replace a launch's arguments, host syncs are refused."""
from __future__ import annotations

import pytest
import torch

from .emulation import graph_tape as gt


@gt.vendor_op("scale_rows")
def scale_rows(x, factors: list):
    return x * torch.tensor(factors, dtype=x.dtype)[:, None]


def _capture(fn):
    g = gt.TapeGraph()
    with torch.inference_mode(), gt.GraphContext(g):
        out = fn()
    return g, out


def test_replay_reads_buffers_now_and_host_values_as_captured():
    x = torch.ones(2, 3)
    factors = [2.0, 3.0]
    g, out = _capture(lambda: scale_rows(x + 1, factors) * 10)
    x.fill_(5)
    factors[0] = 100.0           # a host list changed after capture: the graph keeps the old values
    g.replay()
    assert out[:, 0].tolist() == [120.0, 180.0]


def test_a_task_update_replaces_the_launch_arguments():
    x = torch.ones(2, 3)
    g = gt.TapeGraph()
    with torch.inference_mode(), gt.GraphContext(g):
        g.open_group()
        out = scale_rows(x, [1.0, 1.0])
        handle = g.close_group()
    gt.begin_update(handle)
    scale_rows(x, [4.0, 5.0])
    gt.end_update()
    g.replay()
    assert out[:, 0].tolist() == [4.0, 5.0]


def test_host_syncs_are_refused_while_capturing():
    x = torch.ones(3)
    for bad in (lambda: x.sum().item(), lambda: bool(x.any()), lambda: x.nonzero()):
        with pytest.raises(gt.CaptureError):
            _capture(bad)


def test_an_update_must_reissue_the_same_op():
    x = torch.ones(2, 3)
    g = gt.TapeGraph()
    with torch.inference_mode(), gt.GraphContext(g):
        g.open_group()
        scale_rows(x, [1.0, 1.0])
        handle = g.close_group()

    @gt.vendor_op("other")
    def other(x):
        return x

    gt.begin_update(handle)
    try:
        with pytest.raises(gt.CaptureError, match="does not hold"):
            other(x)
    finally:
        gt._state.update = None   # leave no open update region behind for other tests
