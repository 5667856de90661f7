"""Norms and gated activations left to the AWQ GEMV they feed (models/norm_quant_plan.plan_norm_defer,
core/ops/deferred.py): where the plan defers them, that a deferring model gives the logits
and greedy tokens of an unfused one at batch 1 (exactly on the CPU's reference composition;
through the fused Triton GEMV under the interpreter, within its rounding, with the fused
kernel actually taken), and that batches above one keep the plain norm."""
from __future__ import annotations

import pytest
import torch

from halinfer import LLM
from halinfer.models.norm_quant_plan import DEFER_ACT_ENV, FUSE_ENV, deferred_acts, deferred_norms
from halinfer.testing.hf_compare import halinfer_greedy, max_rel_err, random_prompts
from halinfer.testing.quant_ckpt import quantize
from halinfer.testing.tiny import save_tiny_model

from .test_norm_quant_fusion import KW, SHAPE, _model, _registered, _triton_backend


@pytest.fixture(scope="module")
def awq_ckpt(tmp_path_factory):
    built = {}

    def get(layers=2, dense=()):
        key = (layers, dense)
        if key not in built:
            src = save_tiny_model("llama", str(tmp_path_factory.mktemp(f"llama-nd-{layers}")), seed=11,
                                  dtype=torch.float16, **{**SHAPE, "num_hidden_layers": layers})
            built[key] = quantize(src, str(tmp_path_factory.mktemp("awq") / "q"), "awq", group=64,
                                  dense_modules=dense)[0]
        return built[key]
    return get


@pytest.fixture(autouse=True)
def defer_acts(monkeypatch):
    """The activation's deferral is opt-in (slower on an H200): these tests switch it on."""
    monkeypatch.setenv(DEFER_ACT_ENV, "1")


@pytest.fixture
def normed_calls(monkeypatch):
    """Counts the reference table's w4a16_linear_normed calls (the CPU table composes through it)."""
    from halinfer.core.ops import deferred

    calls = []
    real = deferred.w4a16_linear_normed
    monkeypatch.setattr(deferred, "w4a16_linear_normed", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _run(path, device, monkeypatch, fuse, prompts, n):
    monkeypatch.setenv(FUSE_ENV, fuse)
    kw = KW if device == "cpu" else {**KW, "max_model_len": 32, "max_num_batched_tokens": 32}
    llm = LLM(path, device=device, **kw)
    out = halinfer_greedy(llm, prompts, n)
    return deferred_norms(_model(llm)), out


def test_planned_where_one_awq_linear_reads_the_norm(awq_ckpt, monkeypatch):
    monkeypatch.setenv(FUSE_ENV, "1")
    model = _model(LLM(awq_ckpt(), device="cpu", **KW))
    names = deferred_norms(model)
    assert len(names) == 4 and all(n.endswith(("input_layernorm", "post_attention_layernorm")) for n in names)
    assert not model.model.norm.defer     # the final norm feeds the dense LM head
    assert len(deferred_acts(model)) == 2
    # an MLP the checkpoint left dense reads the float x: its norm stays
    model = _model(LLM(awq_ckpt(dense=("layers.0.mlp",)), device="cpu", **KW))
    assert "model.layers.0.post_attention_layernorm" not in deferred_norms(model)
    assert len(deferred_norms(model)) == 3 and deferred_acts(model) == ["model.layers.1.mlp"]
    monkeypatch.setenv(FUSE_ENV, "auto")  # the CPU table has no fused op of its own: nothing to gain
    assert deferred_norms(_model(LLM(awq_ckpt(), device="cpu", **KW))) == []
    monkeypatch.setenv(FUSE_ENV, "1")
    monkeypatch.delenv(DEFER_ACT_ENV)     # opt-in: the norms only
    model = _model(LLM(awq_ckpt(), device="cpu", **KW))
    assert len(deferred_norms(model)) == 4 and deferred_acts(model) == []


def test_cpu_deferred_and_plain_agree_exactly(awq_ckpt, monkeypatch, normed_calls):
    prompts = random_prompts(1, 256, (9,))      # one sequence: the decode steps run at batch 1
    names, on = _run(awq_ckpt(), "cpu", monkeypatch, "1", prompts, 4)
    # three decode steps; per step layer 0's post-attention norm and layer 1's two norms
    assert len(normed_calls) == 3 * 3, len(normed_calls)
    none, off = _run(awq_ckpt(), "cpu", monkeypatch, "0", prompts, 4)
    assert len(names) == 4 and none == [] and len(normed_calls) == 9
    assert on[0][0] == off[0][0]
    for a, b in zip(on[0][1], off[0][1]):
        assert torch.equal(a.float().cpu(), b.float().cpu())


def test_triton_deferred_matches_plain(awq_ckpt, monkeypatch):
    backend = _triton_backend()   # first: it may re-import the kernel modules under the interpreter
    from halinfer.kernels.triton import w4a16_v3

    normed = []
    real = w4a16_v3.gemv
    monkeypatch.setattr(w4a16_v3, "gemv", lambda *a, **k: normed.append(
        "norm" if k.get("norm") is not None else "act" if k.get("act") is not None else None) or real(*a, **k))
    prompts = random_prompts(1, 256, (7,))
    with _registered(backend) as device:
        names, on = _run(awq_ckpt(layers=1), device, monkeypatch, "auto", prompts, 3)
        fused_calls = normed.count("norm"), normed.count("act")
        _, off = _run(awq_ckpt(layers=1), device, monkeypatch, "0", prompts, 3)
    assert len(names) == 2
    # two decode steps (the first token comes from the prefill); one layer: its input norm has
    # no residual to add (the plain norm runs), its post-attention norm and its activation are
    assert fused_calls == (2, 2), f"fused GEMV calls (norm, act): {fused_calls}"
    assert on[0][0] == off[0][0], "greedy tokens differ"
    for a, b in zip(on[0][1], off[0][1]):
        assert max_rel_err(a, b) < 2e-2


def test_batches_keep_the_plain_norm(awq_ckpt, monkeypatch, normed_calls):
    """Two sequences decode together (M = 2): the norm runs itself; tokens as unfused."""
    prompts = random_prompts(2, 256, (9, 3))   # two sequences
    _, on = _run(awq_ckpt(), "cpu", monkeypatch, "1", prompts, 3)
    assert normed_calls == [], "a batch of two took the deferred norm"
    _, off = _run(awq_ckpt(), "cpu", monkeypatch, "0", prompts, 3)
    assert [t for t, _ in on] == [t for t, _ in off]
