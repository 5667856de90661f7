"""MoE routing (one Triton launch) and pair grouping (two launches) vs the core reference and the
torch path; the fused MoE under every tile configuration a table may hold.

Interpreter targets run in the CPU CI; GPU targets are marked ``gpu``.  Router logits are a
random permutation of distinct values exact in every dtype, so no two scores tie and the
chosen experts must match the reference exactly.
"""
from __future__ import annotations

import json

import pytest
import torch

from halinfer.core.ops import Ops
from tritonops_util import assert_close, ref

REF = Ops()


def _logits(gen, T, E, target):
    # Distinct multiples of 1/32 below 2**8 / 32 in magnitude: exact in bf16, so no two scores tie
    # after the cast and the reference sees the very values the kernel does.
    rows = torch.stack([(torch.randperm(E, generator=gen) - E // 2).float() / 32 for _ in range(T)])
    return rows.to(device=target.device, dtype=target.dtype)


ROUTES = [(1, 8, 2), (5, 60, 8), (33, 128, 8), (7, 256, 9), (3, 7, 1), (17, 64, 6)]


@pytest.mark.parametrize("T,E,k", ROUTES, ids=[f"T{t}_E{e}_k{k}" for t, e, k in ROUTES])
@pytest.mark.parametrize("scoring,renorm,bias,scale", [("softmax", True, False, 1.0), ("softmax", False, False, 2.5),
                                                       ("sigmoid", True, True, 1.0), ("sigmoid", False, False, 1.0)],
                         ids=["softmax-renorm", "softmax-scaled", "sigmoid-bias", "sigmoid"])
def test_route_matches_reference(target, ops, gen, T, E, k, scoring, renorm, bias, scale):
    logits = _logits(gen, T, E, target)
    cb = (torch.rand(E, generator=gen) * 0.01).to(target.device) if bias else None
    w, ids = ops.moe_route(logits, k, scoring=scoring, renormalize=renorm, correction_bias=cb, routed_scaling=scale)
    w_ref, ids_ref = REF.moe_route(ref(logits), k, scoring=scoring, renormalize=renorm, correction_bias=ref(cb),
                                   routed_scaling=scale)
    assert w.dtype == torch.float32 and ids.dtype == torch.int32 and tuple(ids.shape) == (T, k)
    assert torch.equal(ids.cpu(), ids_ref), "chosen experts (or their order) differ from the reference"
    assert_close(w, w_ref, torch.float32, factor=5, what="routing weights")


def test_grouped_routing_goes_to_the_declared_reference(target, ops, gen):
    logits = _logits(gen, 4, 16, target)
    w, ids = ops.moe_route(logits, 2, num_groups=4, topk_groups=2)
    w_ref, ids_ref = REF.moe_route(ref(logits), 2, num_groups=4, topk_groups=2)
    assert torch.equal(ids.cpu(), ids_ref)
    assert_close(w, w_ref, torch.float32, what="grouped routing")


ALIGN = [(1, 8, 1, 16), (7, 16, 3, 16), (64, 128, 8, 32), (256, 128, 8, 64), (511, 60, 8, 16), (40, 256, 8, 128)]


@pytest.mark.parametrize("T,E,k,bm", ALIGN, ids=[f"T{t}_E{e}_k{k}_bm{b}" for t, e, k, b in ALIGN])
@pytest.mark.parametrize("routing", ["random", "skewed"])
def test_align_kernel_equals_the_torch_path(target, gen, T, E, k, bm, routing):
    from halinfer.kernels.triton.moe_align import KERNEL_MAX_PAIRS, align_pairs

    if target.dtype != torch.float32:
        pytest.skip("ids only: one dtype per device is enough")
    if routing == "random":
        ids = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)])
    else:                                   # most pairs on 3 experts: runs over several tiles, most experts empty
        ids = torch.randint(E - 3, E, (T, k), generator=gen)
    ids = ids.to(torch.int32).to(target.device)
    assert ids.numel() <= KERNEL_MAX_PAIRS
    got = align_pairs(ids, E, bm, use_kernel=True)
    want = align_pairs(ids, E, bm, use_kernel=False)
    assert torch.equal(got[0].cpu(), want[0].cpu()), "pair layout differs from the stable sort"
    assert torch.equal(got[1].cpu(), want[1].cpu()), "tile experts differ"


CONFIGS = [(16, (32, 32, 1, 1), (64, 32, 1, 1)), (32, (64, 64, 4, 2), (32, 64, 4, 2)), (64, (32, 16, 2, 2), (32, 32, 2, 1))]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["bm16", "bm32", "bm64"])
def test_fused_moe_under_table_configs(target, ops, gen, cfg):
    from halinfer.kernels.triton.fused_moe import fused_moe
    from halinfer.kernels.triton.moe_tuning import GemmTile, MoeConfig

    if target.interp and cfg[1][2] > 1:
        pytest.skip("multi-warp tiles say nothing more under the interpreter")
    T, H, I, E, k = 21, 72, 40, 8, 3
    x = torch.randn(T, H, generator=gen).to(target.device, target.dtype)
    w13 = (torch.randn(E, 2 * I, H, generator=gen) / H ** 0.5).to(target.device, target.dtype)
    w2 = (torch.randn(E, H, I, generator=gen) / I ** 0.5).to(target.device, target.dtype)
    logits = _logits(gen, T, E, target)
    w, ids = ops.moe_route(logits, k)
    config = MoeConfig(cfg[0], GemmTile(*cfg[1]), GemmTile(*cfg[2]))
    got = fused_moe(x, w13, w2, w, ids, config=config)
    want = REF.fused_moe(ref(x), ref(w13), ref(w2), ref(w), ids.cpu())
    assert_close(got, want, target.dtype, factor=3, what=f"fused_moe {config}")


def test_table_lookup_takes_the_nearest_measured_step(tmp_path, monkeypatch):
    from halinfer.kernels.triton import moe_tuning as mt

    monkeypatch.setattr(mt, "HERE", str(tmp_path))
    mt.load_table.cache_clear()
    entry = lambda bm: {"BLOCK_M": bm, "gemm1": [64, 64, 4, 3], "gemm2": [128, 64, 8, 3]}  # noqa: E731
    path = mt.table_path(8, 64, 32, torch.bfloat16, "cpu")
    with open(path, "w") as f:
        json.dump({"configs": {"1": entry(16), "64": entry(32), "4096": entry(128)}}, f)
    pick = lambda t: mt.pick_config(t, 2, 8, 64, 32, torch.bfloat16, torch.device("cpu")).block_m  # noqa: E731
    assert [pick(1), pick(6), pick(10), pick(100), pick(9000)] == [16, 16, 32, 32, 128]
    # no table for another shape: the rule, which grows BLOCK_M with the pairs per expert
    rule = [mt.pick_config(t, 8, 128, 64, 32, torch.bfloat16, torch.device("cpu")).block_m for t in (1, 256, 8192)]
    assert rule == sorted(rule) and rule[0] < rule[-1]
    mt.load_table.cache_clear()
