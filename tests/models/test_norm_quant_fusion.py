"""RMSNorm fused with the next linears' activation quantization (Ops.rms_norm_quant,
models/norm_quant_plan.py): where it is switched on, and that a quantized checkpoint
gives the same logits and tokens fused and unfused, on the CPU backend (the reference
composition) and on the Triton kernels under the interpreter."""
from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from halinfer import LLM
from halinfer.core.config import ModelConfig
from halinfer.core.ops import Ops
from halinfer.models.decoder import DecoderLayer
from halinfer.models.layers import GatedMLP, ModelContext
from halinfer.models.llama import LlamaAttention
from halinfer.models.moe import RouteSpec, SparseMoE
from halinfer.models.norm_quant_plan import FUSE_ENV, fused_norms, plan_norm_quant_fusion
from halinfer.plugins.cpu.backend import CpuBackend
from halinfer.testing.hf_compare import halinfer_greedy, random_prompts
from halinfer.testing.quant_ckpt import quantize
from halinfer.testing.tiny import make_config, save_tiny_model

# hidden 256: two FP8 groups of 128 per row, so the block path's groups are exercised
SHAPE = dict(hidden_size=256, intermediate_size=192, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2)
FORMATS = {
    "w8a8": ("w8a8", {}),
    "fp8-block-128": ("fp8", dict(block=(128, 128))),
    "fp8-ct-channel": ("fp8-ct", dict(strategy="channel")),
    "fp8-ct-tensor-static": ("fp8-ct", dict(strategy="tensor", input_scale=0.02)),
    "w8a8-mlp0-dense": ("w8a8", dict(dense_modules=("layers.0.mlp",))),
}
# fused norms per format with both layers' two norms eligible (4), or fewer
EXPECT_FUSED = {"w8a8": 4, "fp8-block-128": 4, "fp8-ct-channel": 4, "fp8-ct-tensor-static": 0,
                "w8a8-mlp0-dense": 3}
KW = dict(dtype=torch.float16, num_kv_blocks=32, block_size=8, max_model_len=64, max_num_seqs=4,
          max_num_batched_tokens=64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    dense = {}
    built = {}

    def get(name, layers=SHAPE["num_hidden_layers"]):
        if layers not in dense:
            dense[layers] = save_tiny_model("llama", str(tmp_path_factory.mktemp(f"llama-nq-{layers}")), seed=7,
                                            dtype=torch.float16, **{**SHAPE, "num_hidden_layers": layers})
        if (name, layers) not in built:
            method, opts = FORMATS[name]
            built[name, layers] = quantize(dense[layers], str(tmp_path_factory.mktemp(name) / "q"), method,
                                           **opts)[0]
        return built[name, layers]
    return get


def _model(llm):
    return llm.engine.core.executor.worker.model


def _fused_norms(model):
    return fused_norms(model)


def _triton_backend():
    from halinfer.kernels.triton.interpret import ensure_interpreter

    ok, why = ensure_interpreter()
    if not ok:
        pytest.skip(why)
    from halinfer.kernels.triton.ops import TritonOps

    class TritonQuantOps(TritonOps):
        """TritonOps for the norms and 8-bit GEMMs; the reference for attention, rotary and the
        KV store (not under test here, and slow in the interpreter)."""
        paged_attention = Ops.paged_attention
        store_kv = Ops.store_kv
        rotary = Ops.rotary

    class TritonCpuBackend(CpuBackend):
        name = "triton-interpret"
        dtypes = (torch.float32, torch.float16)   # the interpreter's bf16 tl.dot is wrong

        @property
        def ops(self):
            return TritonQuantOps()
    return TritonCpuBackend()


@contextlib.contextmanager
def _registered(backend):
    from halinfer.core.plugin import load_plugins

    reg = load_plugins()
    reg.backends[backend.name] = backend
    try:
        yield backend.name
    finally:
        reg.backends.pop(backend.name, None)


def _run(path, device, monkeypatch, fuse: str, prompts):
    monkeypatch.setenv(FUSE_ENV, fuse)
    # the interpreter pays per program: a short profile run
    llm = LLM(path, device=device, **(KW if device == "cpu" else {**KW, "max_model_len": 32,
                                                                     "max_num_batched_tokens": 32}))
    fused = _fused_norms(_model(llm))
    logits = [llm.engine.prompt_logits(prompts[0]).float().cpu()]       # every prefill position
    greedy = halinfer_greedy(llm, prompts, 3 if device == "cpu" else 2)  # prefill, then batched decode
    logits += [torch.stack([lg.float().cpu() for lg in steps]) for _, steps in greedy]
    return fused, logits, greedy


def _same_fused_and_unfused(path, device, monkeypatch, fuse_on="1"):
    prompts = random_prompts(5, 256, (9, 3))   # the tiny vocabulary has at least 256 ids
    fused, on_logits, on_greedy = _run(path, device, monkeypatch, fuse_on, prompts)
    none, off_logits, off_greedy = _run(path, device, monkeypatch, "0", prompts)
    assert none == {}
    for a, b in zip(on_logits, off_logits):
        assert torch.equal(a, b), f"fused logits differ: max {float((a - b).abs().max()):.3e}"
    assert [t for t, _ in on_greedy] == [t for t, _ in off_greedy]
    return fused


@pytest.mark.parametrize("name", ["w8a8", "fp8-block-128", "fp8-ct-channel"])
def test_cpu_fused_and_unfused_agree_exactly(checkpoints, monkeypatch, name):
    fused = _same_fused_and_unfused(checkpoints(name), "cpu", monkeypatch)
    assert len(fused) == EXPECT_FUSED[name]


@pytest.mark.parametrize("name", ["w8a8", "fp8-block-128", "fp8-ct-channel"])
def test_triton_fused_and_unfused_agree_exactly(checkpoints, monkeypatch, name):
    backend = _triton_backend()
    # One layer: the interpreter pays per layer, and one layer has both fused kinds (the input
    # norm without a residual, the post-attention norm with one); the CPU runs keep two
    with _registered(backend) as device:
        # auto: on, since the Triton table has its own rms_norm_quant
        fused = _same_fused_and_unfused(checkpoints(name, layers=1), device, monkeypatch, fuse_on="auto")
    assert len(fused) == EXPECT_FUSED[name] // SHAPE["num_hidden_layers"]   # both norms of the one layer


@pytest.mark.parametrize("name", list(FORMATS))
def test_fusion_is_planned_where_the_layer_allows(checkpoints, monkeypatch, name):
    monkeypatch.setenv(FUSE_ENV, "1")
    model = _model(LLM(checkpoints(name), device="cpu", **KW))
    fused = _fused_norms(model)
    assert len(fused) == EXPECT_FUSED[name], sorted(fused)
    for n in fused:
        assert n.endswith(("input_layernorm", "post_attention_layernorm")), n
    if name == "w8a8-mlp0-dense":   # the MLP the checkpoint left dense reads the float x
        assert "model.layers.0.post_attention_layernorm" not in fused
    assert model.model.norm.quant is None   # the final norm feeds the (dense) LM head


def test_auto_leaves_the_reference_table_unfused(checkpoints, monkeypatch):
    monkeypatch.delenv(FUSE_ENV, raising=False)
    assert _fused_norms(_model(LLM(checkpoints("w8a8"), device="cpu", **KW))) == {}


def test_fused_model_calls_the_fused_op(checkpoints, monkeypatch):
    """Counted at the op table: with fusion, every layer's two norms go to rms_norm_quant and
    their linears to the prequant GEMM; without, none do."""
    calls: dict[str, int] = {}
    model = None
    for fuse in ("1", "0"):
        monkeypatch.setenv(FUSE_ENV, fuse)
        llm = LLM(checkpoints("w8a8"), device="cpu", **KW)
        model = _model(llm)
        ops = model.ops
        with pytest.MonkeyPatch.context() as mp:
            for op in ("rms_norm_quant", "w8a8_linear_prequant", "w8a8_linear"):
                real = getattr(ops, op)

                def counted(*a, _real=real, _op=op, _fuse=fuse, **k):
                    calls[(_fuse, _op)] = calls.get((_fuse, _op), 0) + 1
                    return _real(*a, **k)
                mp.setattr(ops, op, counted)
            llm.engine.prompt_logits([1, 2, 3, 4, 5])
    layers = len(model.model.layers)
    assert calls.get(("1", "rms_norm_quant")) == 2 * layers
    # qkv and gate_up, and down_proj (fed by act_and_mul_quant, the same switch's MLP fusion)
    assert calls.get(("1", "w8a8_linear_prequant")) == 3 * layers
    assert calls.get(("1", "w8a8_linear")) == layers                     # o_proj
    assert calls.get(("0", "rms_norm_quant")) is None
    assert calls.get(("0", "w8a8_linear")) == 4 * layers


def _ctx(quant):
    return ModelContext(ops=Ops(), dtype=torch.float32, device=torch.device("cpu"), quant=quant)


def _layer_cfg():
    return ModelConfig(make_config("llama", **SHAPE).to_dict())


def test_moe_block_and_custom_forward_keep_the_unfused_path(monkeypatch):
    """A MoE block's router reads the normed float x (it declares no input_linears); a block
    subclass with its own forward is not trusted with its parent's declaration."""
    monkeypatch.setenv(FUSE_ENV, "1")
    cfg = _layer_cfg()
    ctx = _ctx({"method": "w8a8"})
    attn = LlamaAttention(ctx, cfg, 0, None, False, False, False)
    # quantized experts are not supported: the MoE's own weights are dense, the attention W8A8
    moe = SparseMoE(dataclasses.replace(ctx, quant=None), cfg.hidden_size, 4, 64, RouteSpec(top_k=2))
    layer = DecoderLayer(ctx, cfg, attn, moe)
    assert plan_norm_quant_fusion(layer, ctx.ops) == 1
    assert layer.input_layernorm.quant is not None and layer.post_attention_layernorm.quant is None

    class PeekingMLP(GatedMLP):
        def forward(self, x):   # reads x beside the declared linear
            return super().forward(x) + x

    layer = DecoderLayer(ctx, cfg, LlamaAttention(ctx, cfg, 0, None, False, False, False),
                         PeekingMLP(ctx, cfg.hidden_size, cfg.intermediate_size))
    assert plan_norm_quant_fusion(layer, ctx.ops) == 1
    assert layer.post_attention_layernorm.quant is None


def test_static_fp8_scale_and_dense_layers_keep_the_unfused_path(monkeypatch):
    monkeypatch.setenv(FUSE_ENV, "1")
    cfg = _layer_cfg()
    for quant in ({"method": "fp8", "static_input": True, "format": "compressed-tensors"}, None):
        ctx = _ctx(quant)
        layer = DecoderLayer(ctx, cfg, LlamaAttention(ctx, cfg, 0, None, False, False, False),
                             GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size))
        assert plan_norm_quant_fusion(layer, ctx.ops) == 0
    ctx = _ctx({"method": "fp8", "block": (128, 128)})
    layer = DecoderLayer(ctx, cfg, LlamaAttention(ctx, cfg, 0, None, False, False, False),
                         GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size))
    assert plan_norm_quant_fusion(layer, ctx.ops) == 2
    assert layer.input_layernorm.quant.group == 128
    monkeypatch.setenv(FUSE_ENV, "0")
    assert plan_norm_quant_fusion(layer, ctx.ops) == 0 and layer.input_layernorm.quant is None
