"""The Cambricon backend: identity, availability reasons, declarations, and decode
graphs (emulated torch_mlu + torch_mlu_ops)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from halinfer.core.attention import StepInputs
from halinfer.plugins.camb.backend import CambBackend
from halinfer.plugins.camb.metadata import CambMetadataBuilder

from .conftest import make_camb
from .minimodel import MiniModel, run


def test_loading_the_plugin_imports_no_vendor_library():
    code = ("import sys, halinfer.plugins.camb as p; b = p.halinfer_backends()[0]; b.summary(); b.support(); "
            "print(sorted(m for m in sys.modules if 'mlu' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_identity():
    b = CambBackend()
    assert (b.name, b.aliases, b.device_type, b.dist_backend) == ("camb", ("mlu",), "mlu", "cncl")
    assert (b.kv_layout, b.block_sizes, b.default_block_size) == ("HND", (16,), 16)
    assert b.kv_cache_shape(10, 16, 2, 64) == (10, 2, 16, 64)


def test_without_torch_mlu_the_reason_names_the_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_mlu", None)
    ok, why = CambBackend().available()
    assert not ok and why.startswith("torch_mlu not importable: ModuleNotFoundError")


@pytest.mark.parametrize("config, expect", [
    (dict(device_count=0), "no MLU visible"),
    (dict(tmo_version="1.4.0+torch2.3"), "torch_mlu_ops 1.4.0+torch2.3 is outside the supported range"),
    (dict(tmo_version="2.0.0"), "outside the supported range >=1.5.0,<1.13"),
])
def test_unavailable_reasons(mlu_emulation, config, expect):
    mlu_emulation(**config)
    ok, why = CambBackend(device_type="cpu").available()
    assert not ok and expect in why, why


def test_missing_torch_mlu_ops_is_named(mlu_emulation, monkeypatch):
    mlu_emulation()
    monkeypatch.setitem(sys.modules, "torch_mlu_ops", None)
    ok, why = CambBackend(device_type="cpu").available()
    assert not ok and why.startswith("torch_mlu_ops not importable")


def test_available_and_versions(mlu_emulation):
    b = make_camb(mlu_emulation)
    assert "MLU370" in b.available()[1] and "torch_mlu_ops 1.12.1" in b.available()[1]
    v = b.versions()
    assert v["torch_mlu_ops"][1] == "1.12.1+torch2.11" and v["torch_mlu"][1].startswith("1.24")


def test_metadata_is_all_on_the_device_and_int32():
    step = StepInputs(torch.tensor([3, 1]).numpy().astype("int32"), torch.tensor([3, 20]).numpy().astype("int32"),
                      torch.tensor([[1, 0], [2, 3]]).numpy().astype("int32"),
                      torch.tensor([16, 17, 18, 51]).numpy(), 16)
    m = CambMetadataBuilder(torch.device("cpu"), 16).build(step)
    assert m.cu_seqlens_kv.tolist() == [0, 3, 23] and m.cu_seqlens_kv.dtype == torch.int32
    assert m.slot_mapping.dtype == torch.int32 and m.q_start_loc.tolist() == [0, 3, 4]


def test_support_declares_the_seed_column():
    decls = {d.family: d for d in CambBackend().support()}
    assert decls["Qwen3"].columns == {"FP16/BF16": True} and decls["QWen2-VL"].columns == {"FP16/BF16": False}
    assert "QWen2-MoE" not in decls      # "-" in the seed
    assert all(not d.hardware_verified for d in decls.values())


def test_graph_decode_equals_eager_decode(mlu_emulation):
    b = make_camb(mlu_emulation)
    m = MiniModel(b, head_dim=64, block_size=16)
    eager, _ = run(b, m, "eager")
    graph, runner = run(b, m, "graph")
    assert runner.captured_sizes == (1, 2, 4, 8)
    for e, g in zip(eager, graph):
        torch.testing.assert_close(g, e, atol=2e-3, rtol=2e-3)


def test_a_frozen_max_context_len_would_be_caught(mlu_emulation, monkeypatch):
    """The decode kernel reads lengths from the device, but max_context_len is a host int frozen
    at capture: it must be an upper bound (the runner passes capacity), never the capture-time max."""
    b = make_camb(mlu_emulation)
    m = MiniModel(b, head_dim=64, block_size=16)
    from halinfer.core import graph as core_graph

    real = core_graph.CapturedDecodeRunner._static_meta

    def capture_time_max(self, bs, builder):
        meta = real(self, bs, builder)
        meta.max_seq_len = 1      # what a step of the padded capture batch has
        return meta

    monkeypatch.setattr(core_graph.CapturedDecodeRunner, "_static_meta", capture_time_max)
    with pytest.raises(Exception, match="max_context_len 1 below"):
        run(b, m, "graph")


def test_set_device_passes_an_ordinal(mlu_emulation):
    b = make_camb(mlu_emulation)
    b.runtime(b.torch_device(None)).set_device()      # would raise in torch_mlu without an ordinal


def test_tmo_1_12_1_exports_exactly_its_list_and_w8a8_takes_the_scaled_pair(mlu_emulation):
    from .emulation.mlu.tmo import EXPORTS

    b = make_camb(mlu_emulation, tmo_version="1.12.1+torch2.11")
    tmo = sys.modules["torch_mlu_ops"]
    names = {n for n in vars(tmo) if not n.startswith("__")}
    assert names == set(EXPORTS["1.12.1"]["exports"]) and len(names) == 99
    assert not hasattr(tmo, "per_token_smooth_quantize") and not hasattr(tmo, "smooth_quant_matmul")
    assert b.ops.w8a8 == "scaled" and b.weight_quant == ("w8a8",)


def test_tmo_1_5_0_w8a8_takes_the_smooth_pair(mlu_emulation):
    b = make_camb(mlu_emulation, tmo_version="1.5.0+torch2.4")
    assert b.ops.w8a8 == "smooth" and not hasattr(sys.modules["torch_mlu_ops"], "scaled_quantize")
