"""The Ascend backend's identity, availability reasons, SoC variants, versions and
support declarations (emulated torch_npu; nothing here touches hardware)."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from halinfer.plugins.ascend import soc
from halinfer.plugins.ascend.backend import AscendBackend

from .conftest import make_ascend


def test_loading_the_plugin_imports_no_vendor_library():
    code = ("import sys, halinfer.plugins.ascend as p; b = p.halinfer_backends()[0]; "
            "b.summary(); b.support(); print(sorted(m for m in sys.modules if 'npu' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_identity():
    b = AscendBackend()
    assert (b.name, b.aliases, b.device_type, b.dist_backend, b.kv_layout) == ("ascend", ("npu",), "npu", "hccl", "NHD")
    assert b.default_block_size == 128 and set(b.block_sizes) == {128, 256, 512}
    assert b.kv_cache_dtypes == ("auto",)
    assert AscendBackend(device_type="cpu").torch_device(None) == torch.device("cpu")


def test_without_torch_npu_the_reason_names_the_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)   # import raises ImportError
    ok, why = AscendBackend().available()
    assert not ok and why.startswith("torch_npu not importable: ModuleNotFoundError: import of torch_npu halted")


@pytest.mark.parametrize("config, expect", [
    (dict(version="2.1.0.post3"), "is built for torch 2.1.0"),
    (dict(device_count=0), "no NPU visible"),
    (dict(soc="950"), "is not one this plugin drives"),
    (dict(atb=False), "ATB ops missing"),
])
def test_unavailable_reasons(npu_emulation, config, expect):
    npu_emulation(**config)
    ok, why = AscendBackend(device_type="cpu").available()
    assert not ok and expect in why, why


def test_a_matching_but_untested_torch_npu_release_is_refused_unless_allowed(npu_emulation, monkeypatch):
    npu_emulation()
    monkeypatch.delenv("HALINFER_ALLOW_UNTESTED_VERSIONS")
    from halinfer.plugins.ascend import versions

    monkeypatch.setattr(versions, "TORCH_NPU_RANGE", (">=2.5.1", "<2.6"))
    ok, why = AscendBackend(device_type="cpu").available()
    assert not ok and "outside the supported range >=2.5.1,<2.6" in why
    monkeypatch.setenv("HALINFER_ALLOW_UNTESTED_VERSIONS", "1")
    assert AscendBackend(device_type="cpu").available()[0]


def test_available_never_raises(npu_emulation):
    m = npu_emulation()

    def broken():
        raise RuntimeError("driver exploded")

    m.npu.is_available = broken
    ok, why = AscendBackend(device_type="cpu").available()
    assert not ok and "driver exploded" in why


@pytest.mark.parametrize("variant, product", [("A2", "Atlas 800T A2"), ("A3", "Atlas 800T A3"),
                                              ("310P", "Atlas 300I Duo")])
def test_soc_variants_are_detected(npu_emulation, variant, product):
    b = make_ascend(npu_emulation, soc=variant)
    assert b.soc.variant == variant and b.soc.product == product
    assert product in b.available()[1]


def test_soc_falls_back_to_the_name_without_get_soc_version(npu_emulation):
    assert make_ascend(npu_emulation, soc="310P", old_soc_api=True).soc.variant == "310P"


@pytest.mark.parametrize("version, name, want", [
    (220, None, "A2"), (225, None, "A2"), (250, None, "A3"), (256, None, "A3"), (200, None, "310P"),
    (260, None, "950"), (None, "Ascend910B4-1", "A2"), (None, "Ascend910_9382", "A3"),
    (None, "Ascend310P1", "310P"), (None, "Ascend910A", "unknown"), (999, "Ascend910B1", "A2"),
])
def test_soc_classification(version, name, want):
    assert soc.classify(version, name) == want


def test_per_soc_capabilities(npu_emulation):
    a2 = make_ascend(npu_emulation, soc="A2")
    assert a2.dtypes == (torch.float16, torch.bfloat16) and a2.graph_modes == ("eager", "graph")
    assert set(a2.weight_quant) == {"awq", "w8a8"}
    p = make_ascend(npu_emulation, soc="310P")
    assert p.dtypes == (torch.float16,) and p.graph_modes == ("graph",) and p.weight_quant == ()


def test_versions_report_requirement_and_installed(npu_emulation):
    npu_emulation(cann="8.1.RC1")
    v = AscendBackend(device_type="cpu").versions()
    assert set(v) == {"python", "torch", "torch_npu", "CANN", "NNAL (ATB ops)"}
    assert v["CANN"][1] == "8.1.RC1" and v["NNAL (ATB ops)"][1] == "present"
    assert v["torch"][1] == torch.__version__


def test_capture_sizes_follow_dlinfers_buckets():
    s = AscendBackend().graph_capture_sizes(1024)
    assert s[:7] == [1, 2, 4, 8, 16, 32, 48] and 256 in s and 512 in s and 768 in s and 1024 in s
    assert 272 not in s and AscendBackend().graph_capture_sizes(3) == [1, 2]


def test_support_is_declared_per_soc_and_mode():
    decls = AscendBackend().support()
    by = {(d.family, d.variant): d for d in decls}
    a2 = by[("Llama3", "Atlas 800T A2")].columns
    assert a2 == {"FP16/BF16(eager)": True, "FP16/BF16(graph)": True, "W8A8(graph)": True, "W4A16(eager)": True}
    assert by[("Llama3", "Atlas 300I Duo")].columns == {"FP16/BF16(graph)": True}
    assert "FP16 only" in by[("Llama3", "Atlas 300I Duo")].note
    assert by[("Llama3", "Atlas 800T A3")].columns == {"FP16/BF16(eager)": True}
    assert ("Llama2", "Atlas 300I Duo") not in by                       # "-" in the seed
    assert by[("Mixtral", "Atlas 800T A2")].columns["W8A8(graph)"] is False   # "No" in the seed
    ds = by[("DeepSeek-V2", "Atlas 800T A2")]
    assert ds.columns["FP16/BF16(graph)"] is False and "MLA" in ds.note     # seed Yes, no MLA path here
    assert all(not d.hardware_verified and "not verified on hardware" in d.note for d in decls)


def test_registered_under_its_entry_point():
    from halinfer.core.plugin import load_plugins

    reg = load_plugins()
    b = reg.find("npu")
    assert isinstance(b, AscendBackend) and reg.find("ascend") is b


def test_set_device_passes_an_ordinal(npu_emulation):
    """The engine hands set_device the backend's device without an index; torch_npu wants an ordinal."""
    b = make_ascend(npu_emulation)
    m = __import__("torch_npu")
    b.runtime(b.torch_device(None)).set_device()
    assert m.npu.current_device() == 0
    b.runtime(torch.device("cpu", 0)).set_device()
    with pytest.raises(ValueError, match="specified index"):
        m.npu.set_device("cpu")     # the emulation refuses what torch_npu refuses
