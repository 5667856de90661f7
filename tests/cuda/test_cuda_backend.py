"""The CUDA backend's declarations, availability reasons, lazy loading and graph runner."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import GPU_OK, GPU_WHY
from halinfer.core.graph import ModuleGraphAPI
from halinfer.core.runtime import DeviceRuntime
from halinfer.plugins.cuda.backend import CudaBackend

gpu = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)]


def test_plugin_is_registered_and_loads_without_triton_or_a_gpu():
    code = (
        "import sys, torch\n"
        "from halinfer.core.plugin import load_plugins\n"
        "reg = load_plugins()\n"
        "b = reg.find('cuda')\n"
        "assert b is not None and type(b).__name__ == 'CudaBackend', reg.records\n"
        "assert 'triton' not in sys.modules, 'loading the plugin imported triton'\n"
        "assert not torch.cuda.is_initialized(), 'loading the plugin initialised CUDA'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_backend_declares_its_contract():
    b = CudaBackend()
    assert (b.name, b.device_type, b.dist_backend, b.kv_layout) == ("cuda", "cuda", "nccl", "NHD")
    assert b.priority > 0  # above the CPU backend for device="auto"
    assert b.block_sizes == (16, 32, 64, 128) and b.default_block_size in b.block_sizes
    assert set(b.dtypes) == {torch.float16, torch.bfloat16, torch.float32}
    assert b.graph_modes == ("eager", "graph")
    assert "int8" in b.kv_cache_dtypes  # the kernels quantize in store_kv and dequantize in attention
    assert {"torch", "triton"} <= set(b.versions())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reason given where CUDA is missing")
def test_unavailable_without_cuda_says_why():
    ok, why = CudaBackend().available()
    assert not ok
    if torch.version.cuda is None:
        assert why == f"torch {torch.__version__} was built without CUDA"
    else:
        assert why.startswith("no CUDA device visible")


def test_unavailable_when_triton_cannot_be_imported(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0", raising=False)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "triton", None)   # makes `import triton` raise ImportError
    ok, why = CudaBackend().available()
    assert not ok and why.startswith("triton not importable: ") and "ModuleNotFoundError" in why


def test_graph_api_is_cuda_graphs():
    api = CudaBackend().graph_api(torch.device("cpu"))   # building it touches no GPU
    assert isinstance(api, ModuleGraphAPI) and api.module is torch.cuda and api.graph_cls is torch.cuda.CUDAGraph


def test_ops_are_the_triton_ops():
    from halinfer.kernels.triton.ops import TritonOps

    assert isinstance(CudaBackend().ops, TritonOps)


def test_device_without_index_means_the_current_device(monkeypatch):
    """The engine passes torch.device("cuda") for device="cuda"; torch.cuda.set_device rejects it."""
    calls = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    for name in ("set_device", "synchronize", "mem_get_info", "memory_allocated", "max_memory_allocated",
                 "reset_peak_memory_stats"):
        ret = (1, 2) if name == "mem_get_info" else 0
        monkeypatch.setattr(torch.cuda, name, lambda d, _n=name, _r=ret: calls.append((_n, d)) or _r)
    b = CudaBackend()
    for dev in (torch.device("cuda"), torch.device("cuda", 1)):
        rt = b.runtime(dev)
        assert isinstance(rt, DeviceRuntime) and rt.module is torch.cuda
        rt.set_device()
        rt.synchronize()
        rt.mem_get_info()
        rt.memory_allocated()
        rt.max_memory_allocated()
        rt.reset_peak_memory()
    assert {d for _, d in calls[:6]} == {3} and {d for _, d in calls[6:]} == {1}


@pytest.mark.parametrize("x", [0], ids=["gpu"])
def test_memory_queries_on_the_gpu(x):
    if not GPU_OK:
        pytest.skip(GPU_WHY)
    b = CudaBackend()
    ok, why = b.available()
    assert ok, why
    b.runtime(torch.device("cuda")).set_device()   # what device="cuda" hands the backend
    dev = torch.device("cuda", 0)
    rt = b.runtime(dev)
    rt.set_device()
    free, total = rt.mem_get_info()
    assert 0 < free <= total
    rt.reset_peak_memory()
    t = torch.empty(1 << 20, device=dev)
    rt.synchronize()
    assert rt.memory_allocated() >= t.numel() * 4 and rt.max_memory_allocated() >= t.numel() * 4
    ev = rt.record_event()
    rt.wait_event(ev)
    assert rt.host_buffer((4,), torch.int64).is_pinned()
    del t
    rt.empty_cache()


test_memory_queries_on_the_gpu = pytest.mark.gpu(test_memory_queries_on_the_gpu)


def test_a_maca_build_is_left_to_the_maca_backend(monkeypatch):
    """MetaX's torch presents itself as CUDA; the cuda backend must refuse it by name."""
    import torch

    from halinfer.plugins.cuda.backend import CudaBackend

    monkeypatch.setattr(torch, "__version__", "2.10.0+metax3.8.0.7")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    ok, why = CudaBackend().available()
    assert not ok and "MetaX MACA build" in why and "device='maca'" in why
