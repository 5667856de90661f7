"""DeviceRuntime: one device's memory and queue queries, with index-less devices meaning the current one."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from halinfer.core.backend import Backend
from halinfer.core.runtime import CPU_KV_SPACE_ENV, CpuRuntime, DeviceRuntime


def fake_module(current: int, calls: list):
    """A torch-device-module lookalike that records the ordinal each call receives."""
    def rec(name, ret=None):
        return lambda *a: calls.append((name, a)) or ret
    return SimpleNamespace(
        current_device=lambda: current, set_device=rec("set_device"), synchronize=rec("synchronize"),
        mem_get_info=rec("mem_get_info", (3, 8)), memory_allocated=rec("memory_allocated", 5),
        max_memory_allocated=rec("max_memory_allocated", 7), reset_peak_memory_stats=rec("reset"),
        empty_cache=rec("empty_cache"))


def test_a_device_without_an_index_means_the_modules_current_device():
    for dev, want in ((torch.device("cpu"), 2), (torch.device("cpu", 1), 1)):
        calls = []
        rt = DeviceRuntime(dev, fake_module(2, calls))
        rt.set_device(), rt.synchronize(), rt.mem_get_info(), rt.memory_allocated(), rt.max_memory_allocated()
        rt.reset_peak_memory()
        assert [a for _, a in calls] == [(want,)] * 6


def test_kv_budget_is_a_share_of_total_minus_what_is_in_use_at_most_free():
    rt = DeviceRuntime(torch.device("cpu"), fake_module(0, []))     # free 3, total 8
    assert rt.kv_cache_budget(0.5, 2) == 2 and rt.kv_cache_budget(1.0, 0) == 3 and rt.kv_cache_budget(0.5, 9) == 0


def test_host_tensors_have_no_queue_so_waiting_synchronizes():
    calls = []
    rt = DeviceRuntime(torch.device("cpu"), fake_module(0, calls))
    ev = rt.record_event()
    rt.wait_event(ev)
    assert ev is None and calls == [("synchronize", (0,))]
    assert not rt.host_buffer((2,), torch.int64).is_pinned()


def test_the_default_runtime_of_a_cpu_device_is_the_host(monkeypatch):
    rt = Backend().runtime(torch.device("cpu"))
    assert isinstance(rt, CpuRuntime) and rt.max_memory_allocated() == 0
    monkeypatch.setenv(CPU_KV_SPACE_ENV, "0.5")
    assert rt.kv_cache_budget(0.9, 123) == 1 << 29
    free, total = rt.mem_get_info()
    assert 0 < free <= total


def test_no_graphs_unless_a_backend_supplies_a_graph_api():
    assert Backend().graph_api(torch.device("cpu")) is None
