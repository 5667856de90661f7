"""The fused gated activation + activation quantization kernel (kernels/triton/act_mul_quant.py)
against the unfused path it replaces: activation.py's kernel, then the linear's own quantizer
(act_quant.py) or the core reference quantizers on that output.  q bytes and scales must be
the same bits under the interpreter (interp-*, and bf16 there too: the kernel has no tl.dot),
and the 8-bit GEMMs fed by it the same output as fed by the float activation.  Compiled
(gpu-*), the kernel's only reductions are maxima (exact in any order), so the bits should be
the same too; the checks still allow the fused-kernel rule of test_norm_quant.py (scales within
4 ulps, at most 1% of the codes one step apart) there, and only there.  The gpu-marked model
test runs a tiny W8A8 and FP8 Llama with its MLPs fused and unfused on the GPU."""
from __future__ import annotations

import pytest
import torch

from conftest import GPU_OK, GPU_WHY, INTERP_OK, INTERP_WHY, Target
from halinfer.core.ops import ActQuant
from halinfer.core.ops.fp8 import FP8_MAX, FP8_MIN_SCALE, quant_per_token_group_fp8
from halinfer.core.ops.quant import quant_per_token_int8
from tritonops_util import allowed_fp8_miss, check_prequant_gemm, near_quant, quant_bytes

# rows 1..70 and intermediate sizes with partial groups (67, 300, 1000) and without, up to
# Llama-3-8B's 14336
SHAPES = [(1, 64), (2, 67), (7, 300), (17, 256), (70, 1000), (3, 14336)]
SPECS = {"int8": ActQuant("int8"), "fp8-g128": ActQuant("fp8", 128), "fp8-g64": ActQuant("fp8", 64),
         "fp8-g96": ActQuant("fp8", 96), "fp8-row": None}
KINDS = ("silu", "gelu", "gelu_tanh")


def _spec(name, I):
    return SPECS[name] or ActQuant("fp8", I)


def _input(T, I, gen, target, lead=None):
    x = torch.randn(T, 2 * I, generator=gen) * 3
    x[T // 2, : I // 3] *= 20       # one row with a few large products: other groups' scales stay small
    x = x.to(target.device, target.dtype)
    return x if lead is None else x.view(*lead, 2 * I)


def _unfused(x, kind, spec):
    """activation.py's kernel, then the linear's own one-launch quantizer."""
    from halinfer.kernels.triton.act_quant import quant_fp8_groups, quant_int8_rows
    from halinfer.kernels.triton.activation import gelu_and_mul, silu_and_mul

    y = silu_and_mul(x) if kind == "silu" else gelu_and_mul(x, "tanh" if kind == "gelu_tanh" else "none")
    y = y.reshape(-1, y.shape[-1])
    q, qs = quant_int8_rows(y) if spec.kind == "int8" else quant_fp8_groups(y, min(spec.group, y.shape[1]))
    return y, q, qs


def _check(target, x, kind, spec, **kw):
    from halinfer.kernels.triton.act_mul_quant import act_and_mul_quant

    I = x.shape[-1] // 2
    qa = act_and_mul_quant(x, kind, spec, **kw)
    y, uq, us = _unfused(x, kind, spec)
    T = y.shape[0]
    assert qa.rows == T and qa.dtype == x.dtype and qa.spec == spec and qa.shape == (T, I)
    q, qs = qa.values()
    # 1. the unfused Triton path: what the MLP computes today
    near_quant(target, q, qs, uq, us, "against act_and_mul + act_quant")
    # 2. the core reference quantizer on the unfused activation output
    if spec.kind == "int8":
        rq, rs = quant_per_token_int8(y.cpu())
        near_quant(target, q, qs, rq, rs, "against act_and_mul + the reference quantizer")
    else:
        rq, rs = quant_per_token_group_fp8(y.cpu(), min(spec.group, I))
        if not allowed_fp8_miss(target, spec, I, q, rq):
            near_quant(target, q, qs, rq.contiguous(), rs, "against act_and_mul + the reference quantizer")
    return qa


# every activation on the small shapes, one each on the large ones (the interpreter is slow)
ACT_SHAPES = [(T, I, k) for T, I in SHAPES[:4] for k in KINDS] + \
    [(70, 1000, "gelu_tanh"), (3, 14336, "silu"), (1, 14336, "gelu")]


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("T,I,kind", ACT_SHAPES)
def test_fused_is_act_then_quant(target, gen, T, I, spec_name, kind):
    qa = _check(target, _input(T, I, gen, target), kind, _spec(spec_name, I))
    assert not qa.scales_col_major and qa.q.shape[0] == T


@pytest.mark.parametrize("spec_name", ["int8", "fp8-row"])
@pytest.mark.parametrize("block", [16, 64, 256])
def test_row_kernel_chunks(target, gen, spec_name, block):
    """The whole-row scales (int8, one fp8 group per row) take two passes over the row in chunks:
    small chunks, a last chunk cut short, and a chunk wider than the row all give the same bits."""
    for T, I in ((5, 1000), (3, 67), (2, 17)):
        _check(target, _input(T, I, gen, target), "silu", _spec(spec_name, I), block=block)


def test_leading_dims_and_strided_rows(target, gen):
    """[..., 2I] inputs are flattened into rows; rows with a stride (a column slice of a wider
    tensor) are read in place."""
    _check(target, _input(15, 96, gen, target, lead=(5, 3)), "gelu", ActQuant("int8"))
    wide = _input(7, 300, gen, target)
    x = torch.cat((wide, wide[:, :40]), dim=1)[:, :600]
    assert x.stride(0) == 640
    _check(target, x, "silu", ActQuant("fp8", 128))
    _check(target, x, "gelu_tanh", ActQuant("int8"))


@pytest.mark.parametrize("T,I,group", [(3, 384, 128), (6, 200, 128), (1, 256, 128), (70, 1000, 128),
                                       (5, 256, 256), (2, 67, 67)])
def test_fp8_padded_rows_and_column_major_scales(target, gen, T, I, group):
    spec = ActQuant("fp8", group)
    qa = _check(target, _input(T, I, gen, target), "silu", spec, pad_rows_to=4, scales_col_major=True)
    Tp, G = -(-T // 4) * 4, -(-I // group)
    assert qa.q.shape == (Tp, I) and qa.scale.shape == (Tp, G) and qa.scale.stride() == (1, Tp)
    assert qa.scales_col_major and qa.rows == T
    assert not quant_bytes(qa.q[T:]).any(), "padding rows must be zeros"
    assert torch.all(qa.scale[T:].cpu() == torch.tensor(FP8_MIN_SCALE) / FP8_MAX)


def test_unknown_activation_is_left_to_the_caller(target, gen):
    from halinfer.kernels.triton.act_mul_quant import act_and_mul_quant

    assert act_and_mul_quant(_input(3, 64, gen, target), "swiglu_oai", ActQuant("int8")) is None


def test_empty_batch(target):
    from halinfer.kernels.triton.act_mul_quant import act_and_mul_quant

    x = torch.empty(0, 512, device=target.device, dtype=target.dtype)
    assert act_and_mul_quant(x, "silu", ActQuant("int8")).q.shape == (0, 256)
    qa = act_and_mul_quant(x, "silu", ActQuant("fp8", 128), pad_rows_to=4, scales_col_major=True)
    assert qa.rows == 0 and qa.scale.shape == (4, 2) and not quant_bytes(qa.q).any()


@pytest.mark.skipif(not INTERP_OK, reason=INTERP_WHY)
@pytest.mark.parametrize("spec_name", ["int8", "fp8-g128", "fp8-row"])
def test_bfloat16_under_the_interpreter(gen, spec_name):
    """No tl.dot here, so the interpreter's bf16 is trustworthy for this kernel: the same bits."""
    target = Target(torch.device("cpu"), torch.bfloat16)
    for T, I in ((7, 300), (2, 1000)):
        for kind in KINDS:
            _check(target, _input(T, I, gen, target), kind, _spec(spec_name, I))


@pytest.mark.parametrize("T,I,N", [(1, 256, 64), (7, 384, 96), (33, 256, 128)])
@pytest.mark.parametrize("spec_name", ["int8", "fp8-g128", "fp8-row"])
def test_prequant_gemms_equal_the_unfused_linear(target, gen, ops, T, I, N, spec_name):
    """act_and_mul_quant -> *_linear_prequant gives the very output of act_and_mul -> *_linear,
    through whichever GEMM the dispatch picks (on an H200 in bf16: cuBLASLt's block-scaled or
    rowwise FP8 GEMM, reading the fused kernel's column-major scales)."""
    if target.dtype == torch.bfloat16 and target.interp:
        pytest.skip("the interpreter's bf16 tl.dot is wrong")
    spec = _spec(spec_name, I)
    x = _input(T, I, gen, target)
    qa = ops.act_and_mul_quant(x, "silu", spec)
    y = ops.act_and_mul(x, "silu")
    check_prequant_gemm(ops, qa, y, spec, N, gen, target)


# ---- a tiny quantized model on the GPU: MLPs fused and unfused --------------------------------

# intermediate 256: down_proj's K is a multiple of 128, so FP8-block bf16 takes cuBLASLt's
# block-scaled GEMM, fed by the fused kernel's padded rows and column-major scales
GPU_SHAPE = dict(hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)
@pytest.mark.parametrize("method,opts", [("w8a8", {}), ("fp8", dict(block=(128, 128))),
                                         ("fp8-ct", dict(strategy="channel"))], ids=["w8a8", "fp8-block", "fp8-ct"])
def test_tiny_model_mlps_fused_and_unfused_on_the_gpu(tmp_path, monkeypatch, method, opts):
    from halinfer import LLM
    from halinfer.models.norm_quant_plan import FUSE_ENV, fused_mlps
    from halinfer.models.layers import GatedMLP
    from halinfer.testing.hf_compare import halinfer_greedy, random_prompts
    from halinfer.testing.quant_ckpt import quantize
    from halinfer.testing.tiny import save_tiny_model

    dense = save_tiny_model("llama", str(tmp_path / "dense"), seed=11, dtype=torch.bfloat16, **GPU_SHAPE)
    path = quantize(dense, str(tmp_path / "q"), method, **opts)[0]
    prompts = random_prompts(4, 256, (9, 3))
    kw = dict(device="cuda", dtype=torch.bfloat16, num_kv_blocks=64, block_size=16, max_model_len=128,
              max_num_seqs=4)

    def run(llm):
        logits = [llm.engine.prompt_logits(prompts[0]).float().cpu()]
        greedy = halinfer_greedy(llm, prompts, 4)
        return logits + [torch.stack([lg.float().cpu() for lg in s]) for _, s in greedy], [t for t, _ in greedy]

    # 1. eager, one engine: only the MLPs' fusion toggled (the norms stay fused both times)
    monkeypatch.setenv(FUSE_ENV, "auto" if method == "fp8" else "1")   # auto: FP8 groups only
    llm = LLM(path, enforce_eager=True, **kw)
    model = llm.engine.core.executor.worker.model
    fused = fused_mlps(model)
    assert len(fused) == GPU_SHAPE["num_hidden_layers"], sorted(fused)
    on_logits, on_tokens = run(llm)
    for m in model.modules():
        if isinstance(m, GatedMLP):
            m.down_quant = None
    off_logits, off_tokens = run(llm)
    _close_logits(on_logits, off_logits)
    assert on_tokens == off_tokens
    del llm

    # 2. CUDA graphs: the fused MLP captures and replays; everything fused vs nothing fused
    graphs_on = run(LLM(path, **kw))
    monkeypatch.setenv(FUSE_ENV, "0")
    graphs_off = run(LLM(path, **kw))
    _close_logits(graphs_on[0], graphs_off[0], norms_too=True)
    assert graphs_on[1] == graphs_off[1]


def _close_logits(a_list, b_list, norms_too=False):
    """Equal where the fused kernels give the unfused bits (the MLP's: maxima only); a code one
    step apart moves a logit by about one activation step, within 2% of the logits' range.  The
    norm's fused kernel may differ from rms_norm in the last bit on the GPU (norms_too)."""
    for a, b in zip(a_list, b_list):
        if torch.equal(a, b):
            continue
        diff = float((a - b).abs().max())
        assert diff <= 2e-2 * float(b.abs().max()), f"fused logits differ by {diff:.3e}" + \
            ("" if norms_too else " (MLPs only)")
