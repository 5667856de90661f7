"""benchmarks/make_quant_peer_ckpt.py, which benchmarks/peer_quant.sh uses to give LMDeploy
and halinfer the same AWQ and smooth_quant W8A8 checkpoints, tested on a tiny bf16 Llama on
the CPU. It checks the layouts against tests/quantize/reference.py's independent unpacking:
every decoded weight lies within about half a quantization step of the original (RTN). Then
halinfer loads the output and runs like transformers on its dequantized twin (W8A8 with
activations fake-quantized per token)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from halinfer import LLM
from halinfer.testing.hf_compare import (assert_matches_transformers, halinfer_greedy, hf_greedy, hf_model,
                                         max_rel_err, random_prompts)
from halinfer.testing.quant_ckpt import fake_quant_activations, pack_awq
from halinfer.testing.tiny import save_tiny_model

from . import reference

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("make_quant_peer_ckpt",
                                               os.path.join(REPO, "benchmarks", "make_quant_peer_ckpt.py"))
mq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mq)

PROJ = mq.PROJ


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    # the peer checkpoint is bf16; sizes are multiples of AWQ's group of 128
    return save_tiny_model("llama3", str(tmp_path_factory.mktemp("peer-src")), seed=4, dtype=torch.bfloat16,
                           hidden_size=256, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2,
                           num_hidden_layers=2)


def _tensors(d):
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        files = set(json.load(f)["weight_map"].values())
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(d, f)))
    return sd


def _modules(sd, leaf):
    return sorted(n[: -len(leaf) - 1] for n in sd if n.endswith("." + leaf))


def _twin(qdir, dst, dense_of):
    sd = _tensors(qdir)
    with open(os.path.join(qdir, "config.json")) as f:
        cfg = json.load(f)
    out = {}
    for n, t in sd.items():
        m, _, leaf = n.rpartition(".")
        if m.rpartition(".")[2] not in PROJ:
            out[n] = t.float()
    for m in {n.rpartition(".")[0] for n in sd if n.rpartition(".")[0].rpartition(".")[2] in PROJ}:
        out[f"{m}.weight"] = dense_of({n.rpartition(".")[2]: t for n, t in sd.items()
                                       if n.rpartition(".")[0] == m}).contiguous()
    shutil.copytree(qdir, dst, ignore=shutil.ignore_patterns("*.safetensors*"))
    save_file(out, os.path.join(dst, "model.safetensors"))
    cfg.pop("quantization_config")
    cfg["torch_dtype"] = cfg["dtype"] = "float32"
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    return dst


def _llm(d):
    return LLM(d, device="cpu", dtype=torch.float32, num_kv_blocks=64, block_size=8)


def test_awq_layout_and_run(src, tmp_path):
    q = str(tmp_path / "awq")
    mq.main(["--src", src, "--dst", q, "--format", "awq", "--device", "cpu"])
    assert not os.path.exists(q + ".partial")
    with open(os.path.join(q, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm",
                                          "zero_point": True, "modules_to_not_convert": None}
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "float16"
    orig, sd = load_file(os.path.join(src, "model.safetensors")), _tensors(q)
    mods = _modules(sd, "qweight")
    assert len(mods) == 2 * 7 and all(m.rpartition(".")[2] in PROJ for m in mods)
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                 "model.layers.0.input_layernorm.weight"):
        assert sd[name].dtype == torch.float16 and torch.equal(sd[name], orig[name].half())
    for m in mods:
        w = orig[m + ".weight"].float()                      # [N, K]
        N, K = w.shape
        qw, qz, s = sd[m + ".qweight"], sd[m + ".qzeros"], sd[m + ".scales"]
        assert (qw.dtype, qz.dtype, s.dtype) == (torch.int32, torch.int32, torch.float16)
        assert qw.shape == (K, N // 8) and qz.shape == (K // 128, N // 8) and s.shape == (K // 128, N)
        assert m + ".weight" not in sd
        # packing written value by value from the layout facts gives the same words
        assert torch.equal(pack_awq(torch.from_numpy(reference.awq_unpack(qw))), qw)
        dense = reference.awq_dense({"qweight": qw, "qzeros": qz, "scales": s}, 128)
        step = s.float().t().repeat_interleave(128, 1)
        assert float(((dense - w).abs() / step).max()) <= 0.51, m    # round to nearest (scale rounded to fp16)
    llm = _llm(q)
    assert llm.engine.core.executor.worker.model.ctx.quant["method"] == "awq"
    hf = hf_model(_twin(q, str(tmp_path / "awq-twin"), lambda p: reference.awq_dense(p, 128)))
    assert_matches_transformers(llm, hf, random_prompts(3, llm.engine.vocab_size, (13, 5)), n_tokens=6, tol=1e-4)


def test_smooth_quant_layout_and_run(src, tmp_path):
    q = str(tmp_path / "w8a8")
    mq.main(["--src", src, "--dst", q, "--format", "w8a8", "--device", "cpu"])
    with open(os.path.join(q, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["quantization_config"] == {"quant_method": "smooth_quant", "quant_dtype": "int8"}
    orig, sd = load_file(os.path.join(src, "model.safetensors")), _tensors(q)
    mods = _modules(sd, "scale")
    assert len(mods) == 2 * 7 and all(m.rpartition(".")[2] in PROJ for m in mods)
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                 "model.layers.1.post_attention_layernorm.weight"):
        assert sd[name].dtype == torch.bfloat16 and torch.equal(sd[name], orig[name])
    assert not [n for n in sd if "norm" in n and not n.endswith("norm.weight")]   # norms carry weight only
    for m in mods:
        w = orig[m + ".weight"].float()
        qw, s = sd[m + ".weight"], sd[m + ".scale"]
        assert qw.dtype == torch.int8 and qw.shape == w.shape
        assert s.dtype == torch.float32 and s.shape == (w.shape[0], 1)
        # LMDeploy's per_channel_quant: scale = row absmax / 127, q = round(w / scale)
        assert torch.equal(s, w.abs().amax(1, keepdim=True) / 127)
        assert torch.equal(qw, torch.round(w / s).clamp(-128, 127).to(torch.int8))
    llm = _llm(q)
    assert llm.engine.core.executor.worker.model.ctx.quant["method"] == "w8a8"
    twin = _twin(q, str(tmp_path / "w8a8-twin"), lambda p: p["weight"].float() * p["scale"])
    hf, plain = fake_quant_activations(hf_model(twin), "w8a8"), hf_model(twin)
    for p in random_prompts(4, llm.engine.vocab_size, (13, 5)):
        ref = hf_greedy(hf, p, 6)
        err = max_rel_err(llm.engine.prompt_logits(p), ref.prompt_logits)
        with torch.no_grad():
            off = max_rel_err(plain(torch.tensor([p])).logits[0], ref.prompt_logits)
        assert err < 2e-3 and err < off / 4, f"{len(p)} tokens: {err:.2e} (without activation quantization {off:.2e})"
        (tokens, _), = halinfer_greedy(llm, [p], 6)
        assert tokens == ref.tokens


def test_existing_output_is_reused(src, tmp_path, capsys):
    q = str(tmp_path / "w8a8")
    mq.main(["--src", src, "--dst", q, "--format", "w8a8", "--device", "cpu"])
    stamp = os.path.getmtime(os.path.join(q, "config.json"))
    mq.main(["--src", src, "--dst", q, "--format", "w8a8", "--device", "cpu"])
    assert "reused" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(q, "config.json")) == stamp
