"""GPTQ checkpoints through the CUDA plugin's operator table (TritonOps, Triton's interpreter
on CPU tensors), as a model loads and runs them: finish_loading calls prepare_gptq once per
GPTQ linear, 4-bit GPTQ (act-order too) is re-laid into AWQ's layout, and the model must
still give the tokens of transformers on the dequantized twin.  The CPU backend keeps the
checkpoint's layout (its prepare_gptq is the reference's identity; tests/models checks its
tokens).  Random (dummy)
weights are prepared as well, so benchmarks measure the prepared kernels."""
from __future__ import annotations

import contextlib
import json
import shutil

import pytest
import torch

from conftest import INTERP_OK, INTERP_WHY
from halinfer import LLM
from halinfer.core.plugin import load_plugins
from halinfer.plugins.cpu.backend import CpuBackend
from halinfer.testing.hf_compare import (assert_close_to_transformers, assert_matches_transformers, halinfer_greedy,
                                         hf_model, random_prompts)
from halinfer.testing.quant_ckpt import quantize
from halinfer.testing.tiny import save_tiny_model

pytestmark = pytest.mark.skipif(not INTERP_OK, reason=INTERP_WHY)

# One layer: every kind of GPTQ linear (qkv, o, gate_up, down) is in it, and the interpreter's
# cost is per layer (two layers doubled this file's time for no path more).
SHAPE = dict(hidden_size=128, intermediate_size=192, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=1)
CASES = {
    "g32-v1": dict(group=32),
    "g64-act-order-sym-v2": dict(group=64, desc_act=True, sym=True, v2=True),
    "8bit-g32-act-order": dict(group=32, bits=8, desc_act=True),    # stays GPTQ's layout and kernels
    # compressed-tensors pack-quantized, loaded as GPTQ and re-laid the same way
    "pack-4bit-g32-asym-actorder": dict(method="pack", group=32, sym=False, actorder="group"),
    "pack-4bit-g64-sym": dict(method="pack", group=64),
}


class TritonInterpBackend(CpuBackend):
    """CPU tensors, the CUDA plugin's Triton table (interpreted), its block sizes."""
    name = "triton-interp"
    block_sizes = (16, 32, 64, 128)
    dtypes = (torch.float32, torch.float16)

    @property
    def ops(self):
        from halinfer.kernels.triton.ops import TritonOps

        if not hasattr(self, "_ops"):
            self._ops = TritonOps()
        return self._ops


@contextlib.contextmanager
def triton_backend():
    reg = load_plugins()
    b = TritonInterpBackend()
    reg.backends[b.name] = b
    try:
        yield b.name
    finally:
        reg.backends.pop(b.name, None)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("llama-gptq")), seed=5, **SHAPE)


def _model(llm):
    return llm.engine.core.executor.worker.model


def _gptq_layers(llm):
    return [m for m in _model(llm).modules() if getattr(getattr(m, "qm", None), "name", None) == "gptq"]


def _llm(path, device, dtype, **kw):
    return LLM(path, device=device, dtype=dtype, num_kv_blocks=64, block_size=16, max_num_seqs=4, **kw)


def _assert_relaid(llm, act_order, bits=4):
    layers = _gptq_layers(llm)
    assert layers, "no GPTQ layer was built"
    for m in layers:
        assert m.qm.prepared
        K, N = m.in_features, m.out_features
        if bits != 4:     # AWQ's kernels are 4-bit: GPTQ's layout stays
            assert tuple(m.qweight.shape) == (K * bits // 32, N) and m.g_idx is not None
            assert not m.qm.extra_values and not m.qm.extra_tensors
            continue
        assert tuple(m.qweight.shape) == (K, N // 8) and m.g_idx is None, type(m).__name__
        assert m.qm.extra_values.get("awq_group") in (32, 64)
        assert ("perm" in m.qm.extra_tensors) == act_order
        if act_order:
            assert m.gptq_perm.shape == (K,)
        # no second copy: the module's tensors are the prepared ones only
        names = {n for n, _ in m.named_parameters()} | {n for n, _ in m.named_buffers()}
        assert names <= {"qweight", "qzeros", "scales", "bias", "weight", "gptq_perm"}, names


@pytest.mark.parametrize("name", list(CASES))
def test_gptq_checkpoint_on_the_triton_table_matches_transformers(dense, tmp_path, name):
    opts = dict(CASES[name])
    method = opts.pop("method", "gptq")
    act_order, bits = opts.get("desc_act", False) or opts.get("actorder") == "group", opts.get("bits", 4)
    qdir, ddir = quantize(dense, str(tmp_path / "q"), method, **opts)
    with triton_backend() as dev:
        # float32: exact enough for the strict family check (prompt and decode logits, greedy tokens)
        llm = _llm(qdir, dev, torch.float32, enforce_eager=True)
        _assert_relaid(llm, act_order, bits)
        prompts = random_prompts(11, llm.engine.vocab_size, (11, 4))
        assert_matches_transformers(llm, hf_model(ddir), prompts, n_tokens=4, tol=1e-3)
        del llm
        if bits == 4 and act_order:
            # float16: AWQ's v2 GEMV (M = 1 decode) and tiled path (prefill) on the re-laid tensors,
            # with the x gather; near-tie aware against transformers in float32 and in float16
            llm16 = _llm(qdir, dev, torch.float16, enforce_eager=True)
            _assert_relaid(llm16, act_order)
            assert_close_to_transformers(llm16, hf_model(ddir, dtype=torch.float16).float(),
                                         hf_model(ddir, dtype=torch.float16), prompts, n_tokens=4, slack=4.0)


def test_cpu_backend_keeps_the_checkpoint_layout(dense, tmp_path):
    qdir, _ = quantize(dense, str(tmp_path / "q"), "gptq", group=32, desc_act=True)
    llm = _llm(qdir, "cpu", torch.float32)
    layers = _gptq_layers(llm)
    assert layers
    for m in layers:
        K, N = m.in_features, m.out_features
        assert m.qm.prepared and not m.qm.extra_values and not m.qm.extra_tensors
        assert tuple(m.qweight.shape) == (K // 8, N) and tuple(m.g_idx.shape) == (K,)
        assert not hasattr(m, "gptq_perm")


def _dummy_dir(dense, tmp_path, desc_act):
    d = tmp_path / "gptq-dummy"
    shutil.copytree(dense, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": desc_act,
                                  "sym": True, "checkpoint_format": "gptq"}
    (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


@pytest.mark.parametrize("desc_act", [False, True], ids=["sorted", "act_order"])
def test_dummy_weights_are_prepared_too(dense, tmp_path, desc_act):
    """load_format="dummy" (benchmarks): after the random init (desc_act: a random act-order
    g_idx) the layers are re-laid as a loaded checkpoint's are, and the model runs."""
    path = _dummy_dir(dense, tmp_path, desc_act)
    with triton_backend() as dev:
        llm = _llm(path, dev, torch.float16, load_format="dummy", enforce_eager=True)
        _assert_relaid(llm, desc_act)
        (tokens, _), = halinfer_greedy(llm, [[5, 6, 7, 8]], 3)
        assert len(tokens) == 3
    if desc_act:
        cpu = _llm(path, "cpu", torch.float32, load_format="dummy")
        g = _gptq_layers(cpu)[0].g_idx
        assert not torch.equal(g, torch.arange(g.shape[0], dtype=torch.int32) // 32), "g_idx not act-order"
        assert torch.equal(torch.sort(g).values, torch.arange(g.shape[0], dtype=torch.int32) // 32)
