"""W4A16 (AWQ, GPTQ) kernels against the core references, at the shapes suspected of the
model-level mismatch seen on an H200 (2026-12-01: the kernel test passed, the AWQ/GPTQ
declared-support cells failed): activations that are slices (row stride != K, a storage
offset), N not a multiple of any tile (merged q/k/v, gate/up), bias, M on both sides of the
GEMV (<= 16), split-K (<= 64) and dequantize-then-GEMM (>= 256) limits, packed words with
the top bit set (an arithmetic >> brings in sign bits), GPTQ act-order g_idx, 8-bit GPTQ,
per-channel groups, and weight shards (qweight / scales sliced along N, as tensor
parallelism cuts them).  On a GPU one more case captures the op in a CUDA graph and
replays it with new inputs."""
from __future__ import annotations

import pytest
import torch

from conftest import GPU_OK, GPU_WHY
from halinfer.core.ops import Ops
from halinfer.core.ops.gptq import gptq_pack_cols, gptq_pack_rows
from halinfer.core.ops.quant import awq_pack

REF = Ops()

CASES = [  # M, K, N, group, what
    (1, 256, 64, 32, "gemv_m1"),
    (1, 512, 120, 128, "gemv_m1_merged_n"),          # N = 3 x 40: no tile divides it
    (2, 256, 72, 64, "gemv_m2"),
    (16, 512, 40, 128, "gemv_m16"),
    (17, 256, 88, 32, "tiled_m17"),
    (65, 128, 48, 64, "tiled_m65"),
    (200, 128, 136, 128, "tiled_m200"),
    (300, 128, 72, 32, "dequant_m300"),               # dequantize, then torch's GEMM
    (3, 96, 24, 96, "per_channel_group"),
    (5, 160, 56, 160, "group_not_pow2"),              # no K tile divides 160 but 32: still one group each
    (4, 240, 32, 48, "group48"),                      # 48: tiles of 16
]


def _weights(K, N, group, gen, top_bits=False):
    q = torch.randint(0, 16, (K, N), generator=gen)
    z = torch.randint(0, 16, (K // group, N), generator=gen)
    if top_bits:        # every packed word negative as an int32: high nibbles >= 8
        q[:, 7::8] = 15
        q[:, 1::8] = 15     # AWQ puts column 8c+7 in the top nibble, GPTQ row 8r+7
        q[7::8, :] = 15
        z[:, 7::8] = 15
    s = torch.rand(K // group, N, generator=gen) * 0.02 + 0.001
    return q, z, s


def _x(M, K, dtype, device, gen, layout):
    base = torch.randn(M + 2, K + 24, generator=gen)
    if layout == "slice":            # row stride K + 24, storage offset: as a view of a fused buffer
        x = base.to(device, dtype)[1:M + 1, 8:K + 8]
        assert x.stride(0) != K
    else:
        x = base[:M, :K].contiguous().to(device, dtype)
    return x


def _rel(a, b):
    return float((a.detach().cpu().float() - b).abs().max() / b.abs().max().clamp(min=1e-6))


TOL = {torch.float32: 2e-3, torch.float16: 4e-3, torch.bfloat16: 2e-2}   # tf32 / fp16 / bf16 rounding of W and y


@pytest.fixture
def gemv_spy(monkeypatch):
    """Counts which W4A16 path ran: the GEMV (returns a tensor) or the tiled kernel (None)."""
    from halinfer.kernels.triton import w4a16

    seen = []
    real = w4a16._gemv

    def spy(*a, **k):
        y = real(*a, **k)
        seen.append(y is not None)
        return y
    monkeypatch.setattr(w4a16, "_gemv", spy)
    return seen


@pytest.mark.parametrize("layout", ["contig", "slice"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("M,K,N,group,what", CASES, ids=[c[-1] for c in CASES])
def test_awq_matches_reference(target, ops, gen, gemv_spy, M, K, N, group, what, bias, layout):
    dev, dt = target.device, target.dtype
    q, z, s = _weights(K, N, group, gen, top_bits=(what == "gemv_m1"))
    x = _x(M, K, dt, dev, gen, layout)
    b = torch.randn(N, generator=gen).to(dev, dt) if bias else None
    got = ops.w4a16_linear(x, awq_pack(q).to(dev), s.to(dev, dt), awq_pack(z).to(dev), group, bias=b)
    want = REF.w4a16_linear(x.cpu().float(), awq_pack(q), s.to(dt).float(), awq_pack(z), group,
                            bias=None if b is None else b.cpu().float())
    assert got.shape == (M, N) and got.dtype == dt
    assert _rel(got, want) < TOL[dt], f"{what}: rel err {_rel(got, want):.2e}"
    if M <= 16:
        assert gemv_spy == [True], "M <= 16 should run the GEMV kernel"


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("act_order", [False, True], ids=["sorted", "act_order"])
@pytest.mark.parametrize("M,K,N,group,what", CASES, ids=[c[-1] for c in CASES])
def test_gptq_matches_reference(target, ops, gen, gemv_spy, M, K, N, group, what, act_order, bits):
    dev, dt = target.device, target.dtype
    hi = (1 << bits) - 1
    q = torch.randint(0, hi + 1, (K, N), generator=gen)
    z = torch.randint(0, hi + 1, (K // group, N), generator=gen)
    if what == "gemv_m1":
        q[7::8], z[:, 7::8] = hi, hi        # top bits of every packed word set
    s = torch.rand(K // group, N, generator=gen) * 0.02 + 0.001
    g_idx = (torch.arange(K) // group).int()
    if act_order:
        g_idx = g_idx[torch.randperm(K, generator=gen)]
    qw, qz = gptq_pack_rows(q, bits), gptq_pack_cols(z, bits)
    x = _x(M, K, dt, dev, gen, "slice" if act_order else "contig")
    b = torch.randn(N, generator=gen).to(dev, dt)
    got = ops.gptq_linear(x, qw.to(dev), qz.to(dev), s.to(dev, dt), g_idx.to(dev), bits, bias=b)
    want = REF.gptq_linear(x.cpu().float(), qw, qz, s.to(dt).float(), g_idx, bits, bias=b.cpu().float())
    assert _rel(got, want) < TOL[dt], f"{what}: rel err {_rel(got, want):.2e}"
    if M <= 16 and (bits == 4 or N % 4 == 0):
        assert gemv_spy == [True], "M <= 16 should run the GEMV kernel"


@pytest.mark.parametrize("M", [1, 9, 40])
def test_awq_weight_shard_views(target, ops, gen, M):
    """A column shard of qweight / qzeros / scales (row strides of the full matrix)."""
    dev, dt = target.device, target.dtype
    K, N, group = 256, 192, 64
    q, z, s = _weights(K, N, group, gen)
    qw, qz = awq_pack(q), awq_pack(z)
    lo, hi = 64, 160                                       # output columns 64..159
    x = _x(M, K, dt, dev, gen, "contig")
    got = ops.w4a16_linear(x, qw.to(dev)[:, lo // 8:hi // 8], s.to(dev, dt)[:, lo:hi], qz.to(dev)[:, lo // 8:hi // 8],
                           group)
    want = REF.w4a16_linear(x.cpu().float(), qw[:, lo // 8:hi // 8].contiguous(), s.to(dt).float()[:, lo:hi],
                            qz[:, lo // 8:hi // 8].contiguous(), group)
    assert _rel(got, want) < TOL[dt]


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)
@pytest.mark.parametrize("fmt", ["awq", "gptq_act_order"])
@pytest.mark.parametrize("M", [1, 8, 40])
def test_w4a16_in_a_cuda_graph(M, fmt):
    """Captured once, replayed on new inputs: the graph path of a decode step."""
    from halinfer.kernels.triton.ops import TritonOps

    g = torch.Generator().manual_seed(M)
    ops, dev, dt = TritonOps(), "cuda", torch.bfloat16
    K, N, group = 512, 384, 128
    q, z, s = _weights(K, N, group, g)
    gi = (torch.arange(K) // group).int()[torch.randperm(K, generator=g)]
    if fmt == "awq":
        cpu = (awq_pack(q), s.to(dt), awq_pack(z), group)
        op, ref_op = ops.w4a16_linear, REF.w4a16_linear
    else:
        cpu = (gptq_pack_rows(q, 4), gptq_pack_cols(z, 4), s.to(dt), gi, 4)
        op, ref_op = ops.gptq_linear, REF.gptq_linear
    dev_args = tuple(t.to(dev) if torch.is_tensor(t) else t for t in cpu)

    def run(x):
        return op(x, *dev_args)

    def ref(x):
        return ref_op(x.cpu().float(), *(t.float() if torch.is_tensor(t) and t.is_floating_point() else t
                                         for t in cpu))

    x = torch.randn(M, K, generator=g).to(dev, dt)
    run(x)                                    # warm-up: compiles, learns g_idx
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = run(x)
    for _ in range(2):
        x.copy_(torch.randn(M, K, generator=g).to(dev, dt))
        graph.replay()
        torch.cuda.synchronize()
        assert _rel(y, ref(x)) < TOL[dt]
