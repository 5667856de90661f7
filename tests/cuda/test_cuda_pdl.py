"""Programmatic dependent launch (kernels/triton/pdl.py, HALINFER_PDL=1): the kernels that take
it give the same bits with it as without, one by one and as a chain of dependent launches
(norm -> v3a GEMV -> gated activation -> v3a GEMV, each reading the last one's output),
eagerly and replayed from a captured CUDA graph; the interpreter never gets the launch
option.  Odd sizes: a partial last N tile, K not a power of two, several K splits."""
from __future__ import annotations

import pytest
import torch

from conftest import GPU_OK, GPU_WHY
from halinfer.core.ops.quant import awq_pack


def _awq(gen, K, N, group, dev, dt):
    q = torch.randint(0, 16, (K, N), generator=gen)
    z = torch.randint(0, 16, (K // group, N), generator=gen)
    s = torch.rand(K // group, N, generator=gen) * 0.02 + 0.001
    return awq_pack(q).to(dev), awq_pack(z).to(dev), s.to(dev, dt)


def _chain(x, res, w_norm, up, down, group):
    """What a decode step's MLP launches, each kernel on the previous one's output."""
    from halinfer.kernels.triton import activation, norm, w4a16_v3

    h, res2 = norm.rms_norm(x, w_norm, 1e-6, res)
    gu = w4a16_v3.gemv("v3a", h, up[0], up[1], up[2], group, None, up[2].shape[1])
    a = activation.silu_and_mul(gu)
    return w4a16_v3.gemv("v3a", a, down[0], down[1], down[2], group, None, down[2].shape[1]), res2


def _model(gen, H, I, group, dev, dt):
    # H and I multiples of the group: the GEMVs read K // group scale rows
    x = torch.randn(1, H, generator=gen).to(dev, dt)
    res = torch.randn(1, H, generator=gen).to(dev, dt)
    w = torch.randn(H, generator=gen).to(dev, dt)
    return x, res, w, _awq(gen, H, 2 * I, group, dev, dt), _awq(gen, I, H, group, dev, dt)


def test_interpreter_never_gets_the_launch_option(target, gen, monkeypatch):
    """With the switch set, CPU / interpreted tensors still run (the interpreter refuses
    launch_pdl) and give the same bits as without it."""
    from halinfer.kernels.triton import pdl

    if target.dtype == torch.float32:
        pytest.skip("the v3 GEMVs take fp16 / bf16 activations")
    if not target.interp:
        pytest.skip("the GPU targets are the tests below")
    args = _model(gen, 96, 64, 32, target.device, target.dtype)
    off = _chain(*args, 32)
    monkeypatch.setattr(pdl, "ON", True)
    assert not pdl.enabled(args[0])
    on = _chain(*args, 32)
    assert torch.equal(on[0], off[0]) and torch.equal(on[1], off[1])


@pytest.mark.parametrize("H,I,group", [(4096, 1536, 128), (2112, 704, 64), (192, 96, 32)])
def test_pdl_chain_gives_the_same_bits_eager_and_in_a_graph(target, gen, monkeypatch, H, I, group):
    from halinfer.kernels.triton import pdl

    if target.interp or target.dtype == torch.float32:
        pytest.skip("compiled fp16 / bf16 only (the interpreter never launches with PDL)")
    dev, dt = target.device, target.dtype
    args = _model(gen, H, I, group, dev, dt)
    off = _chain(*args, group)
    monkeypatch.setattr(pdl, "ON", True)
    assert pdl.enabled(args[0]) == (torch.cuda.get_device_capability(dev)[0] >= 9)
    on = _chain(*args, group)
    assert torch.equal(on[0], off[0]) and torch.equal(on[1], off[1]), "PDL changed an eager result"

    # captured: every launch of the chain in one graph, replayed over fresh inputs
    static_x = args[0].clone()
    torch.cuda.synchronize(dev)
    _chain(static_x, *args[1:], group)                      # warm: compiled, counters allocated
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = _chain(static_x, *args[1:], group)
    for _ in range(3):
        x = torch.randn(1, H, generator=gen).to(dev, dt)
        static_x.copy_(x)
        g.replay()
        monkeypatch.setattr(pdl, "ON", False)
        want = _chain(x, *args[1:], group)
        monkeypatch.setattr(pdl, "ON", True)
        assert torch.equal(out[0], want[0]) and torch.equal(out[1], want[1]), "PDL changed a graph replay"


@pytest.mark.parametrize("T,HQ,HK,D", [(1, 32, 8, 128), (7, 12, 4, 64), (3, 5, 1, 80)])
def test_pdl_rotary_then_store_gives_the_same_bits(target, gen, monkeypatch, T, HQ, HK, D):
    """The kernels between the qkv GEMV and attention: rotary of q / k, then k and v stored
    (bf16 cache; slots scattered over blocks, one negative: skipped), on the rotary's output."""
    from halinfer.core.attention import LayerKV
    from halinfer.kernels.triton import pdl, rotary, store_kv

    if target.interp:
        pytest.skip("compiled only (the interpreter never launches with PDL)")
    dev, dt = target.device, target.dtype
    q = torch.randn(T, HQ, D, generator=gen).to(dev, dt)
    k = torch.randn(T, HK, D, generator=gen).to(dev, dt)
    v = torch.randn(T, HK, D, generator=gen).to(dev, dt)
    pos = torch.randint(0, 500, (T,), generator=gen).to(dev)
    inv = 1.0 / 10000 ** (torch.arange(0, D, 2).float() / D)
    ang = torch.arange(512).float()[:, None] * inv[None, :]
    cache = torch.cat([ang.cos(), ang.sin()], dim=-1).to(dev)
    bs, nb = 16, 8
    slots = torch.randperm(nb * bs, generator=gen)[:T]
    slots[T // 2] = -1
    slots = slots.to(dev)

    def run():
        qo, ko = rotary.rotary(q, k, pos, cache, True)
        kc = torch.full((nb, bs, HK, D), float("nan"), dtype=dt, device=dev)
        vc = torch.full_like(kc, float("nan"))
        store_kv.store_kv(ko, v, LayerKV(kc, vc, "NHD"), slots)
        return qo, ko, kc, vc

    off = run()
    monkeypatch.setattr(pdl, "ON", True)
    on = run()
    for a, b in zip(on, off):
        assert torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan())


@pytest.mark.parametrize("splits", [1, 3], ids=["one_split", "three_splits"])
@pytest.mark.parametrize("int8", [False, True], ids=["bf16_cache", "int8_cache"])
def test_pdl_decode_attention_gives_the_same_bits(target, gen, monkeypatch, splits, int8):
    """Decode attention (and its split merge) with PDL on vs off: lengths 1, 17, 40 and 130
    over 16-token blocks in random order, grouped heads."""
    import math

    from halinfer.kernels.triton import pdl
    from halinfer.kernels.triton.attention_decode import paged_attention_decode
    from tritonops_util import make_paged

    if target.interp:
        pytest.skip("compiled only (the interpreter never launches with PDL)")
    dev, dt = target.device, target.dtype
    p = make_paged([(n - 1, 1) for n in (1, 17, 40, 130)], 2, 64, 16, dt, dev, gen, int8=int8)
    q = torch.randn(p.step.num_tokens, 8, 64, generator=gen).to(dev, dt)
    meta = p.meta(dev)
    off = paged_attention_decode(q, p.kv, meta, scale=1 / math.sqrt(64), num_splits=splits)
    monkeypatch.setattr(pdl, "ON", True)
    on = paged_attention_decode(q, p.kv, meta, scale=1 / math.sqrt(64), num_splits=splits)
    assert torch.equal(on, off)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)
def test_pdl_awq_model_gives_the_same_tokens_and_logits_with_graphs(tmp_path, monkeypatch):
    """A two-layer AWQ (group 32) Llama through the engine with CUDA graphs: every decode
    kernel PDL can take launches with it; greedy tokens and every step's logits as without."""
    import numpy as np

    from halinfer import LLM
    from halinfer.kernels.triton import pdl
    from halinfer.testing.hf_compare import halinfer_greedy
    from halinfer.testing.quant_ckpt import quantize
    from halinfer.testing.tiny import save_tiny_model

    src = save_tiny_model("llama", str(tmp_path / "dense"), seed=3, hidden_size=128, intermediate_size=192,
                          num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)
    path, _ = quantize(src, str(tmp_path / "awq"), "awq", group=32)
    rng = np.random.default_rng(11)
    prompts = [rng.integers(3, 400, size=n).tolist() for n in (23, 5, 12)]
    runs = []
    for flag in ("0", "1"):
        monkeypatch.setattr(pdl, "ON", flag == "1")
        llm = LLM(path, device="cuda", dtype="float16", num_kv_blocks=64, block_size=16, max_num_seqs=4)
        assert llm.engine.graphs
        runs.append(halinfer_greedy(llm, prompts, 12))
        llm.shutdown()
    for (t0, l0), (t1, l1) in zip(*runs):
        assert t0 == t1
        for a, b in zip(l0, l1):
            assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
