"""The Triton fused MoE (tokens grouped by expert, one launch per GEMM) vs the core reference.

Interpreter targets run in the CPU CI (float32/float16); GPU targets are marked ``gpu``.
Routing is drawn at random, skewed onto few experts, or left with empty experts, so
tiles mix full, partial and padding-only rows.
"""
from __future__ import annotations

import pytest
import torch

from halinfer.core.ops import Ops
from tritonops_util import assert_close, dirty, randn, ref

REF = Ops()


def _inputs(gen, target, T, H, I, E, k, bias, routing="random"):
    dev, dt = target.device, target.dtype
    x = randn(gen, T, H, dtype=dt, device=dev)
    w13 = randn(gen, E, 2 * I, H, dtype=dt, device=dev, scale=2 / H ** 0.5)
    w2 = randn(gen, E, H, I, dtype=dt, device=dev, scale=1 / I ** 0.5)
    b13 = randn(gen, E, 2 * I, dtype=dt, device=dev, scale=0.5) if bias else None
    b2 = randn(gen, E, H, dtype=dt, device=dev, scale=0.5) if bias else None
    if routing == "random":
        ids = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)])
    elif routing == "skewed":      # every token picks from the same k + 1 experts: long runs, most experts empty
        pool = torch.randperm(E, generator=gen)[:k + 1]
        ids = torch.stack([pool[torch.randperm(k + 1, generator=gen)[:k]] for _ in range(T)])
    else:                          # "last": only the highest expert ids (empty runs before them)
        ids = torch.stack([E - 1 - torch.randperm(k, generator=gen) for _ in range(T)])
    w = torch.rand(T, k, generator=gen) + 0.1
    w = (w / w.sum(-1, keepdim=True)).to(dev)
    return x, w13, w2, b13, b2, w, ids.to(torch.int32).to(dev)


def _check(ops, target, inputs, act, factor=3):
    x, w13, w2, b13, b2, w, ids = inputs
    x0, w0, ids0 = x.clone(), w.clone(), ids.clone()
    dirty(x.device, 4 * ids.numel() * (w13.shape[1] + x.shape[1]) * 2)
    got = ops.fused_moe(x, w13, w2, w, ids, activation=act, w13_bias=b13, w2_bias=b2)
    want = REF.fused_moe(ref(x), ref(w13), ref(w2), ref(w), ids.cpu(), activation=act, w13_bias=ref(b13),
                         w2_bias=ref(b2))
    assert torch.equal(x, x0) and torch.equal(w, w0) and torch.equal(ids, ids0), "fused_moe wrote into an input"
    assert got.dtype == x.dtype and got.device == x.device
    assert_close(got, want, target.dtype, factor=factor, what=f"fused_moe {act}")


# (T, H, I, E, top_k): odd sizes, top-k 1..8, 8..256 experts
SHAPES = [(1, 64, 32, 8, 1), (7, 67, 48, 8, 2), (33, 64, 40, 16, 4), (5, 96, 64, 8, 8), (40, 80, 24, 64, 6),
          (3, 64, 32, 256, 8), (19, 48, 112, 128, 3)]


@pytest.mark.parametrize("T,H,I,E,k", SHAPES, ids=[f"T{t}_H{h}_I{i}_E{e}_k{k}" for t, h, i, e, k in SHAPES])
def test_fused_moe_matches_reference(target, ops, gen, T, H, I, E, k):
    _check(ops, target, _inputs(gen, target, T, H, I, E, k, bias=False), "silu")


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh", "swiglu_oai"])
def test_fused_moe_activations_and_biases(target, ops, gen, act):
    _check(ops, target, _inputs(gen, target, 9, 72, 40, 8, 2, bias=True), act)


@pytest.mark.parametrize("routing", ["skewed", "last"])
def test_fused_moe_uneven_routing(target, ops, gen, routing):
    # 50 tokens on 3 experts: runs span several tiles; the other 29 experts get nothing.
    _check(ops, target, _inputs(gen, target, 50, 64, 32, 32, 2, bias=True, routing=routing), "silu")


def test_fused_moe_repeated_expert_in_one_row_is_summed(target, ops, gen):
    # The contract sums over a row's choices; the same expert twice counts twice.
    x, w13, w2, b13, b2, w, ids = _inputs(gen, target, 6, 64, 32, 8, 2, bias=False)
    ids = ids[:, :1].repeat(1, 2)
    _check(ops, target, (x, w13, w2, b13, b2, w, ids), "silu")


def test_fused_moe_unknown_activation_is_refused(target, ops, gen):
    x, w13, w2, _, _, w, ids = _inputs(gen, target, 2, 64, 32, 8, 2, bias=False)
    with pytest.raises(ValueError, match="unknown activation"):
        ops.fused_moe(x, w13, w2, w, ids, activation="relu")


def test_align_groups_every_pair_once_in_single_expert_tiles(gen):
    from halinfer.kernels.triton.fused_moe import align_pairs

    E, bm = 16, 16
    ids = torch.randint(0, 4, (37, 3), generator=gen)          # skewed onto experts 0..3
    ids[0] = torch.tensor([15, 9, 2])
    pairs, block_expert = align_pairs(ids, E, bm)
    m = ids.numel()
    flat = ids.reshape(-1)
    real = pairs[pairs < m].long()
    assert sorted(real.tolist()) == list(range(m)), "every (token, choice) pair exactly once"
    for b, e in enumerate(block_expert.tolist()):
        tile = pairs[b * bm:(b + 1) * bm].long()
        tile = tile[tile < m]
        if e == E:
            assert tile.numel() == 0, "a tile past the last run holds pairs"
        else:
            assert (flat[tile] == e).all(), f"tile {b} mixes experts"
    used = set(block_expert.tolist()) - {E}
    assert used == set(flat.tolist())


@pytest.mark.gpu
def test_fused_moe_qwen3_30b_shape_in_a_cuda_graph(gen):
    """Qwen3-30B-A3B's MoE (H 2048, I 768, 128 experts, top-8), bf16, the decode and prefill
    tile configurations, captured in a CUDA graph and replayed on new routing (no host sync)."""
    from conftest import GPU_OK, GPU_WHY
    if not GPU_OK:
        pytest.skip(GPU_WHY)
    from halinfer.kernels.triton.ops import TritonOps

    ops = TritonOps()
    dev, dt = torch.device("cuda"), torch.bfloat16

    class T_:
        device, dtype = dev, dt

    for T in (64, 1024, 2048):   # the three tile configurations (pairs per expert 4, 64, 128)
        x, w13, w2, _, _, w, ids = _inputs(gen, T_, T, 2048, 768, 128, 8, bias=False)
        _check(ops, T_, (x, w13, w2, None, None, w, ids), "silu")
        ops.fused_moe(x, w13, w2, w, ids)          # compile outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = ops.fused_moe(x, w13, w2, w, ids)
        _, _, _, _, _, w_new, ids_new = _inputs(gen, T_, T, 2048, 768, 128, 8, bias=False)
        w.copy_(w_new)
        ids.copy_(ids_new)
        graph.replay()
        want = REF.fused_moe(ref(x), ref(w13), ref(w2), ref(w), ids.cpu())
        assert_close(out, want, dt, factor=3, what=f"graph replay T={T}")
