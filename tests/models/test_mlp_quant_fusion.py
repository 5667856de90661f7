"""A gated MLP's activation fused with down_proj's activation quantization
(Ops.act_and_mul_quant, models/norm_quant_plan.py's plan_mlp_quant_fusion): where it is
switched on, and that a quantized checkpoint gives the same logits and tokens with its MLPs
fused and unfused, on the CPU backend (the reference composition) and on the Triton kernels
under the interpreter, with one rank and with two (down_proj row-parallel)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from halinfer import LLM
from halinfer.core.config import ModelConfig
from halinfer.core.distributed import TPGroup
from halinfer.core.ops import ActQuant, Ops
from halinfer.models.decoder import DecoderLayer
from halinfer.models.layers import GatedMLP, ModelContext
from halinfer.models.llama import LlamaAttention
from halinfer.models.moe import RouteSpec, SparseMoE
from halinfer.models.norm_quant_plan import FUSE_ENV, fused_mlps, fused_norms, plan_mlp_quant_fusion
from halinfer.testing.hf_compare import halinfer_greedy, random_prompts
from halinfer.testing.quant_ckpt import quantize
from halinfer.testing.tiny import make_config, save_tiny_model

from .test_norm_quant_fusion import FORMATS, KW, SHAPE, _model, _registered, _triton_backend

LAYERS = SHAPE["num_hidden_layers"]
# fused MLPs per format: every layer's, or fewer
EXPECT_MLPS = {"w8a8": LAYERS, "fp8-block-128": LAYERS, "fp8-ct-channel": LAYERS, "fp8-ct-tensor-static": 0,
               "w8a8-mlp0-dense": LAYERS - 1}
SPEC = {"w8a8": ActQuant("int8"), "fp8-block-128": ActQuant("fp8", 128),
        "fp8-ct-channel": ActQuant("fp8", SHAPE["intermediate_size"])}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    dense = save_tiny_model("llama", str(tmp_path_factory.mktemp("llama-mq")), seed=9, dtype=torch.float16,
                            **SHAPE)
    built = {}

    def get(name):
        if name not in built:
            method, opts = FORMATS[name]
            built[name] = quantize(dense, str(tmp_path_factory.mktemp(name) / "q"), method, **opts)[0]
        return built[name]
    return get


def _outputs(llm, prompts, steps):
    logits = [llm.engine.prompt_logits(prompts[0]).float().cpu()]       # every prefill position
    greedy = halinfer_greedy(llm, prompts, steps)                       # prefill, then batched decode
    logits += [torch.stack([lg.float().cpu() for lg in s]) for _, s in greedy]
    return logits, [t for t, _ in greedy]


def _same(a, b):
    (al, at), (bl, bt) = a, b
    for x, y in zip(al, bl):
        assert torch.equal(x, y), f"fused logits differ: max {float((x - y).abs().max()):.3e}"
    assert at == bt


def _unfuse_mlps(model):
    for m in model.modules():
        if isinstance(m, GatedMLP):
            m.down_quant = None


def _fused_and_unfused(path, device, monkeypatch, fuse_on, name):
    """(1) one engine, only its MLPs' fusion toggled (the norms stay as planned); (2) everything
    fused against HALINFER_FUSE_NORM_QUANT=0."""
    prompts = random_prompts(5, 256, (9, 3))
    kw = KW if device == "cpu" else {**KW, "max_model_len": 32, "max_num_batched_tokens": 32}
    steps = 3 if device == "cpu" else 2        # the interpreter is slow
    monkeypatch.setenv(FUSE_ENV, fuse_on)
    llm = LLM(path, device=device, **kw)
    model = _model(llm)
    fused = fused_mlps(model)
    assert len(fused) == EXPECT_MLPS[name], sorted(fused)
    assert set(fused.values()) == {SPEC[name]}
    on = _outputs(llm, prompts, steps)
    _unfuse_mlps(model)
    _same(on, _outputs(llm, prompts, steps))
    monkeypatch.setenv(FUSE_ENV, "0")
    off = LLM(path, device=device, **kw)
    assert fused_mlps(_model(off)) == {} and fused_norms(_model(off)) == {}
    _same(on, _outputs(off, prompts, steps))


@pytest.mark.parametrize("name", ["w8a8", "fp8-block-128", "fp8-ct-channel"])
def test_cpu_mlps_fused_and_unfused_agree_exactly(checkpoints, monkeypatch, name):
    _fused_and_unfused(checkpoints(name), "cpu", monkeypatch, "1", name)


@pytest.mark.parametrize("name", ["w8a8", "fp8-block-128", "fp8-ct-channel"])
def test_triton_mlps_fused_and_unfused_agree_exactly(checkpoints, monkeypatch, name):
    backend = _triton_backend()
    with _registered(backend) as device:
        # auto fuses FP8 groups on the Triton table (act_and_mul_quant_pays); the whole-row kinds
        # are fused by asking ("1"), so their kernel is checked too
        _fused_and_unfused(checkpoints(name), device, monkeypatch, "auto" if name == "fp8-block-128" else "1", name)


@pytest.mark.parametrize("name", list(FORMATS))
def test_mlp_fusion_is_planned_where_down_proj_quantizes(checkpoints, monkeypatch, name):
    monkeypatch.setenv(FUSE_ENV, "1")
    fused = fused_mlps(_model(LLM(checkpoints(name), device="cpu", **KW)))
    assert len(fused) == EXPECT_MLPS[name], sorted(fused)
    assert all(n.endswith(".mlp") for n in fused), sorted(fused)
    if name == "w8a8-mlp0-dense":   # the MLP the checkpoint left dense takes the float activation
        assert "model.layers.0.mlp" not in fused


def test_auto_leaves_the_reference_table_unfused(checkpoints, monkeypatch):
    monkeypatch.delenv(FUSE_ENV, raising=False)
    assert fused_mlps(_model(LLM(checkpoints("w8a8"), device="cpu", **KW))) == {}


def test_fused_mlp_calls_the_fused_op(checkpoints, monkeypatch):
    """Counted at the op table: with fusion every MLP's activation goes to act_and_mul_quant (whose
    reference composition calls act_and_mul itself) and down_proj to the prequant GEMM; without,
    to act_and_mul and the plain GEMM."""
    calls: dict = {}
    for fuse in ("1", "0"):
        monkeypatch.setenv(FUSE_ENV, fuse)
        llm = LLM(checkpoints("fp8-block-128"), device="cpu", **KW)
        ops = _model(llm).ops
        with pytest.MonkeyPatch.context() as mp:
            for op in ("act_and_mul_quant", "act_and_mul", "fp8_linear_prequant", "fp8_linear"):
                real = getattr(ops, op)

                def counted(*a, _real=real, _op=op, _fuse=fuse, **k):
                    calls[(_fuse, _op)] = calls.get((_fuse, _op), 0) + 1
                    return _real(*a, **k)
                mp.setattr(ops, op, counted)
            llm.engine.prompt_logits([1, 2, 3, 4, 5])
    assert calls.get(("1", "act_and_mul_quant")) == LAYERS
    assert calls.get(("1", "fp8_linear_prequant")) == 3 * LAYERS        # qkv, gate_up, down_proj
    assert calls.get(("1", "fp8_linear")) == LAYERS                     # o_proj
    assert calls.get(("0", "act_and_mul")) == LAYERS and calls.get(("0", "act_and_mul_quant")) is None


# ---- module level: which MLPs may fuse ----------------------------------------------------------

def _ctx(quant, tp=TPGroup()):
    return ModelContext(ops=Ops(), dtype=torch.float32, device=torch.device("cpu"), quant=quant, tp=tp)


def _cfg():
    return ModelConfig(make_config("llama", **SHAPE).to_dict())


def test_moe_dense_and_custom_mlps_keep_the_unfused_path(monkeypatch):
    """The routed experts are no GatedMLP (fused_moe has its own activation) and a MoE block's
    shared expert is dense (quantized experts are not supported): nothing fuses in a MoE layer
    beside a W8A8 attention; a dense or statically scaled down_proj, or a GatedMLP subclass with
    its own forward, does not fuse either."""
    monkeypatch.setenv(FUSE_ENV, "1")
    cfg = _cfg()
    ctx = _ctx({"method": "w8a8"})
    moe = SparseMoE(dataclasses.replace(ctx, quant=None), cfg.hidden_size, 4, 64, RouteSpec(top_k=2),
                    shared_intermediate=96)
    layer = DecoderLayer(ctx, cfg, LlamaAttention(ctx, cfg, 0, None, False, False, False), moe)
    assert plan_mlp_quant_fusion(layer, ctx.ops) == 0 and moe.shared_experts.down_quant is None

    for quant in (None, {"method": "fp8", "static_input": True, "format": "compressed-tensors"}):
        mlp = GatedMLP(_ctx(quant), cfg.hidden_size, cfg.intermediate_size)
        assert plan_mlp_quant_fusion(mlp, mlp.ops) == 0 and mlp.down_quant is None

    class PeekingMLP(GatedMLP):
        def forward(self, x):   # its own forward: not trusted with GatedMLP's plan
            return super().forward(x) * 2
    mlp = PeekingMLP(ctx, cfg.hidden_size, cfg.intermediate_size)
    assert plan_mlp_quant_fusion(mlp, ctx.ops) == 0 and mlp.down_quant is None

    mlp = GatedMLP(_ctx({"method": "fp8", "block": (128, 128)}), cfg.hidden_size, cfg.intermediate_size)
    assert plan_mlp_quant_fusion(mlp, mlp.ops) == 1 and mlp.down_quant == ActQuant("fp8", 128)
    monkeypatch.setenv(FUSE_ENV, "0")
    assert plan_mlp_quant_fusion(mlp, mlp.ops) == 0 and mlp.down_quant is None


def _fill(module, gen):
    """Random values in every parameter, in its format's range (int8 codes, e4m3 values, small
    positive scales), block FP8's scales made constant over each block's rows."""
    for name, p in module.named_parameters():
        if p.dtype == torch.int8:
            p.data.copy_(torch.randint(-127, 128, p.shape, generator=gen, dtype=torch.int8))
        elif p.dtype == torch.float8_e4m3fn:
            p.data.copy_((torch.randn(p.shape, generator=gen) * 50).clamp(-448, 448).to(p.dtype))
        elif "scale" in name:
            p.data.copy_(torch.rand(p.shape, generator=gen) * 1e-3 + 1e-4)
        else:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    for m in module.modules():
        hook = getattr(getattr(m, "qm", None), "after_dummy_init", None)
        if hook is not None:
            hook(m)


@pytest.mark.parametrize("quant", [{"method": "w8a8"}, {"method": "fp8", "block": (128, 128)},
                                   {"method": "fp8", "format": "compressed-tensors"}],
                         ids=["w8a8", "fp8-block", "fp8-channel"])
@pytest.mark.parametrize("rank", [0, 1])
def test_a_row_parallel_shard_fuses_exactly(monkeypatch, quant, rank):
    """With two ranks down_proj holds half of the intermediate channels and reads the
    activation's local half: the fused op quantizes exactly that shard, as the linear would
    (the partial sums, reduce=False here, are the same bits fused and unfused)."""
    monkeypatch.setenv(FUSE_ENV, "1")
    ctx = _ctx(quant, TPGroup(rank, 2))
    ctx = dataclasses.replace(ctx, dtype=torch.float16)
    mlp = GatedMLP(ctx, 256, 512, bias=True, reduce=False)
    assert mlp.down_proj.in_features == 256       # this rank's half
    _fill(mlp, torch.Generator().manual_seed(rank))
    assert plan_mlp_quant_fusion(mlp, ctx.ops) == 1
    x = torch.randn(11, 256, generator=torch.Generator().manual_seed(7)).to(torch.float16)
    fused = mlp(x)
    mlp.down_quant = None
    unfused = mlp(x)
    assert fused.dtype == unfused.dtype == torch.float16 and fused.shape == (11, 256)
    assert torch.isfinite(unfused).all() and torch.equal(fused, unfused)


def test_tensor_parallel_w8a8_model_fused_and_unfused_agree_exactly(checkpoints, monkeypatch):
    """Two ranks on gloo: every MLP's down_proj row-parallel, fused against unfused."""
    from halinfer import SamplingParams

    prompts = random_prompts(3, 256, (9, 3))
    greedy = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    got = {}
    for fuse in ("1", "0"):
        monkeypatch.setenv(FUSE_ENV, fuse)      # the worker processes inherit it and plan with it
        llm = LLM(checkpoints("w8a8"), device="cpu", tensor_parallel_size=2, **KW)
        try:
            outs = llm.generate(prompt_token_ids=prompts, sampling_params=greedy, use_tqdm=False)
            got[fuse] = ([llm.engine.prompt_logits(p).float().cpu() for p in prompts],
                         [o.outputs[0].token_ids for o in outs])
        finally:
            llm.shutdown()
    _same(got["1"], got["0"])


def test_auto_fuses_only_where_the_table_says_it_pays():
    """Triton: FP8 groups narrower than the row (the group kernel, faster than two launches on an
    H200); int8 and whole-row FP8 (the two-pass row kernel, slower at decode sizes) are not
    planned in auto mode.  The reference table never pays (its op is the composition)."""
    from halinfer.core.ops import ActQuant, Ops
    from halinfer.kernels.triton.ops import TritonOps

    tri = TritonOps()
    assert tri.act_and_mul_quant_pays(ActQuant("fp8", 128), 14336)
    assert not tri.act_and_mul_quant_pays(ActQuant("fp8", 14336), 14336)
    assert not tri.act_and_mul_quant_pays(ActQuant("int8"), 14336)
    assert not Ops().act_and_mul_quant_pays(ActQuant("fp8", 128), 14336)
