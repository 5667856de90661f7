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
    (dict(atb=False), "NNAL (ATB) not installed"),
    (dict(soc="910"), "Ascend910B (soc_version 104) is not one this plugin drives"),
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
    (None, "Ascend310P1", "310P"), (None, "Ascend910A", "910"), (999, "Ascend910B1", "A2"),
    (104, None, "910"), (None, "Ascend910B", "910"), (241, None, "310B"), (None, "Ascend999", "unknown"),
])
def test_soc_classification(version, name, want):
    assert soc.classify(version, name) == want


# enum class SocVersion, Ascend/pytorch torch_npu/csrc/core/npu/NpuVariables.h (master 9e73e708a)
NPU_VARIABLES = (
    "Ascend910PremiumA=100,Ascend910ProA,Ascend910A,Ascend910ProB,Ascend910B,Ascend310P1=200,Ascend310P2,"
    "Ascend310P3,Ascend310P4,Ascend310P5,Ascend310P7,Ascend910B1=220,Ascend910B2,Ascend910B2C,Ascend910B3,"
    "Ascend910B4,Ascend910B4_1,Ascend310B1=240,Ascend310B2,Ascend310B3,Ascend310B4,Ascend910_9391=250,"
    "Ascend910_9392,Ascend910_9381,Ascend910_9382,Ascend910_9372,Ascend910_9362,Ascend910_9363,Ascend950=260")


def test_soc_table_is_the_npu_variables_enum():
    want, value = {}, None
    for item in NPU_VARIABLES.split(","):
        name, _, v = item.partition("=")
        value = int(v) if v else value + 1
        want[value] = name
    assert {v: n for v, (n, _) in soc.SOC_VERSIONS.items()} == want
    assert soc.SOC_VERSIONS[221][0] == "Ascend910B2" and soc.SOC_VERSIONS[223][0] == "Ascend910B3"
    variants = {v: var for v, (_, var) in soc.SOC_VERSIONS.items()}
    assert {v for v, var in variants.items() if var == "A2"} == set(range(220, 226))
    assert {v for v, var in variants.items() if var == "A3"} == set(range(250, 257))
    assert {v for v, var in variants.items() if var == "310P"} == set(range(200, 206))


def test_per_soc_capabilities(npu_emulation):
    a2 = make_ascend(npu_emulation, soc="A2")
    assert a2.dtypes == (torch.float16, torch.bfloat16) and a2.graph_modes == ("eager", "graph")
    assert set(a2.weight_quant) == {"awq", "w8a8"}
    p = make_ascend(npu_emulation, soc="310P")
    assert p.dtypes == (torch.float16,) and p.graph_modes == ("graph",) and p.weight_quant == ()
    assert p.kv_layout == "NZ" and max(p.block_sizes) == 128 and a2.kv_layout == "NHD"


def test_300i_duo_caches_are_nz_within_the_atb_limits(npu_emulation):
    p = make_ascend(npu_emulation, soc="310P")
    m = __import__("torch_npu")
    assert p.kv_cache_shape(10, 128, 2, 128) == (10, 16, 128, 16)
    c = p.allocate_kv_cache((10, 16, 128, 16), torch.float16, torch.device("cpu"))
    assert m.get_npu_format(c) == 29
    with pytest.raises(ValueError, match="block_size \\* head_dim"):
        p.kv_cache_shape(10, 128, 2, 256)        # 128 * 256 > 128 * 128: use 64
    assert p.kv_cache_shape(10, 64, 2, 256) == (10, 32, 64, 16)


def test_versions_report_requirement_and_installed(npu_emulation):
    npu_emulation(cann="8.1.RC1")
    v = AscendBackend(device_type="cpu").versions()
    assert set(v) == {"python", "torch", "torch_npu", "CANN", "NNAL (ATB ops)", "op-plugin ops"}
    assert v["op-plugin ops"][1] == "rotary_mode=yes, moe_token_unpermute=yes"
    assert v["CANN"][1] == "8.1.RC1" and v["NNAL (ATB ops)"][1] == "present"
    assert v["torch"][1] == torch.__version__


def test_nnal_probe_fails_although_the_lazy_wrappers_exist(npu_emulation):
    """op-plugin installs torch_npu._npu_* whether or not NNAL is there; only loading tells."""
    m = npu_emulation(atb=False)
    assert hasattr(m, "_npu_reshape_and_cache")
    with pytest.raises(OSError, match="nnal package"):
        m._npu_reshape_and_cache(None, None, None, None, None)
    ok, why = AscendBackend(device_type="cpu").available()
    assert not ok and why.startswith("NNAL (ATB) not installed")


def test_capture_sizes_follow_dlinfers_buckets():
    s = AscendBackend().graph_capture_sizes(1024)
    assert s[:7] == [1, 2, 4, 8, 16, 32, 48] and 256 in s and 512 in s and 768 in s and 1024 in s
    assert 272 not in s and AscendBackend().graph_capture_sizes(3) == [1, 2]


def test_support_is_declared_per_soc_and_mode():
    decls = AscendBackend().support()
    by = {(d.family, d.variant): d for d in decls}
    a2 = by[("Llama3", "Atlas 800T A2")].columns
    assert a2 == {"FP16/BF16(eager)": True, "FP16/BF16(graph)": True, "W8A8(graph)": True, "W4A16(eager)": True}
    assert by[("Llama3", "Atlas 300I Duo")].columns == {"FP16/BF16(graph)": True, "FP16/BF16(eager)": False,
                                                        "W8A8(graph)": False, "W4A16(eager)": False}
    assert "refused" in by[("Llama3", "Atlas 300I Duo")].note and "pertoken_scale" in by[("Llama3", "Atlas 300I Duo")].note
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
