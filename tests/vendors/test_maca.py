"""The MACA backend: detection of a MetaX build, availability reasons, declarations,
and decode graphs (emulated MetaX stack; the reused Triton kernels interpreted)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from halinfer.plugins.maca.backend import MacaBackend
from halinfer.torch_build import maca_markers

from .conftest import make_maca
from .minimodel import MiniModel, run


def test_loading_the_plugin_imports_no_vendor_library():
    code = ("import sys, halinfer.plugins.maca as p; b = p.halinfer_backends()[0]; b.summary(); b.support(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcoplib', 'flash_attn', 'triton')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_identity():
    b = MacaBackend()
    assert (b.name, b.device_type, b.dist_backend, b.kv_layout) == ("maca", "cuda", "nccl", "NHD")
    from halinfer.plugins.cuda.backend import CudaBackend

    assert b.priority > CudaBackend.priority      # a MACA build also shows torch.cuda devices
    assert b.graph_capture_sizes(20) == [1, 2, 4, 8, 16]


def test_stock_torch_is_not_maca():
    if maca_markers():
        pytest.skip(f"this torch is a MACA build: {maca_markers()}")
    ok, why = MacaBackend().available()
    assert not ok and "is not a MetaX MACA build" in why and "+metax" in why


def test_markers_alone_do_not_make_it_available(maca_emulation):
    maca_emulation(device_count=0)
    ok, why = MacaBackend(device_type="cpu").available()
    assert not ok and "no MetaX GPU visible" in why


def test_a_missing_vendor_library_is_named(maca_emulation, monkeypatch):
    maca_emulation(with_flash_attn=False)
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    ok, why = MacaBackend(device_type="cpu").available()
    assert not ok and why.startswith("flash_attn not importable")


def test_available_on_an_emulated_maca_build(maca_emulation):
    b = make_maca(maca_emulation)
    assert "MetaX C500" in b.available()[1] and "USE_MACA" in b.available()[1]
    assert set(b.versions()) == {"python", "torch", "triton", "flash_attn", "mcoplib", "MACA SDK"}


@pytest.mark.parametrize("nargs", [4, 5])
def test_topk_softmax_schema_is_probed(maca_emulation, nargs):
    b = make_maca(maca_emulation, topk_softmax_args=nargs)
    logits = torch.randn(5, 8)
    w, ids = b.ops.moe_route(logits.half(), 2)
    want = torch.softmax(logits.half().float(), -1).topk(2, -1)
    torch.testing.assert_close(w, want.values / want.values.sum(-1, keepdim=True))
    assert torch.equal(ids.long(), want.indices)


def test_which_ops_are_maca_kernels_and_which_are_triton(maca_emulation):
    b = make_maca(maca_emulation)
    from halinfer.kernels.triton.ops import TritonOps

    ops = b.ops
    assert isinstance(ops, TritonOps)
    own = {n for n in ("rms_norm", "rotary", "silu_and_mul", "store_kv", "paged_attention", "moe_route")
           if getattr(type(ops), n) is not getattr(TritonOps, n)}
    assert own == {"rms_norm", "rotary", "silu_and_mul", "store_kv", "paged_attention", "moe_route"}
    assert type(ops).gelu_and_mul is TritonOps.gelu_and_mul


def test_support_declares_the_seed_column():
    decls = {d.family: d for d in MacaBackend().support()}
    assert decls["QWen2-MoE"].columns == {"FP16/BF16": True} and decls["QWen2-MoE"].variant == "MetaX C500"
    assert "DeepSeek-V2" not in decls and "GLM-4V" not in decls and "QWen2" in decls and "Qwen2.5" in decls
    assert all(not d.hardware_verified for d in decls.values())


def test_graph_decode_equals_eager_decode(maca_emulation):
    """Prefill runs the Triton kernels (interpreted: slow), decode flash_attn, captured."""
    b = make_maca(maca_emulation)
    m = MiniModel(b, head_dim=64, block_size=16)
    eager, _ = run(b, m, "eager", prompt_lens=(5, 9), decode_steps=3, sizes=(1, 2))
    graph, runner = run(b, m, "graph", prompt_lens=(5, 9), decode_steps=3, sizes=(1, 2))
    assert runner.captured_sizes == (1, 2)
    for e, g in zip(eager, graph):
        torch.testing.assert_close(g, e, atol=2e-3, rtol=2e-3)


def test_set_device_passes_an_ordinal(maca_emulation):
    b = make_maca(maca_emulation)
    b.runtime(b.torch_device(None)).set_device()      # torch.cuda.set_device(torch.device("cuda")) raises
