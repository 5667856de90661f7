"""W4A16 (AWQ, GPTQ) kernels against the core references, at the shapes suspected of the
model-level mismatch seen on an H200 (2026-12-01: the kernel test passed, the AWQ/GPTQ
declared-support cells failed): activations that are slices (row stride != K, a storage
offset), N not a multiple of any tile (merged q/k/v, gate/up), bias, M on both sides of the
GEMV (<= 16), split-K (<= 64) and dequantize-then-GEMM (>= 256) limits, packed words with
the top bit set (an arithmetic >> brings in sign bits), GPTQ act-order g_idx, 8-bit GPTQ,
per-channel groups, and weight shards (qweight / scales sliced along N, as tensor
parallelism cuts them).  On a GPU one more case captures the op in a CUDA graph and
replays it with new inputs.  GPTQ also runs as a model runs it: prepare_gptq re-lays 4-bit
GPTQ (act-order too) into AWQ's layout once, and gptq_linear then runs AWQ's kernels.

The GEMV cases run under both GEMV kernels (``gemv_impl``): v1 (dequantize on the CUDA
cores) and v2 (4-bit, fp16/bf16: biased nibbles into the tensor cores, one launch with the
split-K partials summed by the last program of each N tile); a few more cases drive v2's
split-K reduction and its reused tile counters."""
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


@pytest.fixture(params=["v1", "v2"])
def gemv_impl(request, monkeypatch):
    """Which GEMV kernel the M <= 16 cases run (w4a16.GEMV_IMPL): (name, the v2 calls so far,
    each True when it returned a tensor, False when it fell back to v1)."""
    from halinfer.kernels.triton import w4a16

    monkeypatch.setattr(w4a16, "GEMV_IMPL", request.param)
    seen = []
    real = w4a16._gemv_v2

    def spy(*a, **k):
        y = real(*a, **k)
        seen.append(y is not None)
        return y
    monkeypatch.setattr(w4a16, "_gemv_v2", spy)
    return request.param, seen


def _v2_takes(M, dt, v2_fits=True):
    return M <= 16 and dt != torch.float32 and v2_fits


def _skip_repeat(gemv_impl, M, dt, v2_fits=True):
    if gemv_impl[0] == "v1" and not _v2_takes(M, dt, v2_fits):
        pytest.skip("the v2 run takes the same path: v2 does not take this case")


def _assert_impl(gemv_impl, M, dt, v2_fits=True):
    """v1 never calls the v2 kernel; v2 runs where it takes the case (else falls back)."""
    impl, seen = gemv_impl
    if impl == "v1":
        assert not seen, "GEMV_IMPL v1 called the v2 kernel"
    elif _v2_takes(M, dt, v2_fits):
        assert seen == [True], f"v2 should have taken this case: {seen}"
    else:
        assert True not in seen, "v2 ran a case it does not take"


@pytest.mark.parametrize("layout", ["contig", "slice"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("M,K,N,group,what", CASES, ids=[c[-1] for c in CASES])
def test_awq_matches_reference(target, ops, gen, gemv_spy, gemv_impl, M, K, N, group, what, bias, layout):
    dev, dt = target.device, target.dtype
    _skip_repeat(gemv_impl, M, dt)
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
    _assert_impl(gemv_impl, M, dt)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("act_order", [False, True], ids=["sorted", "act_order"])
@pytest.mark.parametrize("M,K,N,group,what", CASES, ids=[c[-1] for c in CASES])
def test_gptq_matches_reference(target, ops, gen, gemv_spy, gemv_impl, M, K, N, group, what, act_order, bits):
    dev, dt = target.device, target.dtype
    # v2 takes 4-bit plain groups (one group: any g_idx is) whose K tile (64 or 128 rows) fits
    v2_fits = bits == 4 and (not act_order or group >= K) and (group % 64 == 0 or group >= K)
    _skip_repeat(gemv_impl, M, dt, v2_fits)
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
    if bits == 4 or N % 4 == 0:
        _assert_impl(gemv_impl, M, dt, v2_fits)


# GPTQ as a model runs it: prepare_gptq once at load, then gptq_linear on what it returned.
# 4-bit GPTQ is re-laid into AWQ's layout (act-order: rows sorted by g_idx, x gathered by perm),
# so every path below is AWQ's: the v2 GEMV (M <= 16, fp16 / bf16; v1 for float32), the
# split-K tiles (17..255) and dequantize + GEMM (>= 256).  K not a power of two, N an odd
# multiple of 8 (no tile divides it).
PREP_CASES = [  # M, K, N, group
    (1, 192, 40, 32), (1, 320, 56, 64), (3, 192, 72, 64), (3, 384, 24, 128), (16, 320, 40, 32),
    (16, 384, 56, 128), (40, 192, 72, 64), (40, 320, 24, 32), (300, 192, 40, 64), (300, 384, 56, 128),
]


def _gptq_tensors(K, N, group, act_order, gen, bits=4):
    hi = (1 << bits) - 1
    q = torch.randint(0, hi + 1, (K, N), generator=gen)
    z = torch.randint(0, hi + 1, (-(-K // group), N), generator=gen)
    q[7::8], z[:, 7::8] = hi, hi            # top bits set in every packed word (both layouts)
    s = torch.rand(-(-K // group), N, generator=gen) * 0.02 + 0.001
    g_idx = (torch.arange(K) // group).int()
    if act_order:
        g_idx = g_idx[torch.randperm(K, generator=gen)]
    return gptq_pack_rows(q, bits), gptq_pack_cols(z, bits), s, g_idx


@pytest.fixture
def launch_spy(monkeypatch):
    """The W4A16 format each launch ran (0 AWQ's kernels, 1 GPTQ's) and each v2 GEMV's result."""
    from halinfer.kernels.triton import w4a16

    fmts, v2 = [], []
    real_launch, real_v2 = w4a16._launch, w4a16._gemv_v2

    def launch(fmt, *a, **k):
        fmts.append(fmt)
        return real_launch(fmt, *a, **k)

    def gemv_v2(*a, **k):
        y = real_v2(*a, **k)
        v2.append(y is not None)
        return y
    monkeypatch.setattr(w4a16, "_launch", launch)
    monkeypatch.setattr(w4a16, "_gemv_v2", gemv_v2)
    return fmts, v2


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("act_order", [False, True], ids=["sorted", "act_order"])
@pytest.mark.parametrize("M,K,N,group", PREP_CASES, ids=[f"M{m}_K{k}_N{n}_g{g}" for m, k, n, g in PREP_CASES])
def test_prepared_gptq_runs_awq_kernels(target, ops, gen, launch_spy, M, K, N, group, act_order, bias):
    dev, dt = target.device, target.dtype
    qw, qz, s, g_idx = _gptq_tensors(K, N, group, act_order, gen)
    prep = ops.prepare_gptq(qw.to(dev), qz.to(dev), s.to(dev, dt), g_idx.to(dev), 4)
    # re-laid: AWQ's shapes, no g_idx, a device permutation exactly when the groups were scattered
    assert tuple(prep["qweight"].shape) == (K, N // 8) and tuple(prep["qzeros"].shape) == (K // group, N // 8)
    assert prep["g_idx"] is None and prep["awq_group"] == group
    if act_order:
        perm = prep["perm"]
        assert perm is not None and perm.device.type == dev.type
        assert torch.equal(g_idx[perm.cpu()].long(), torch.arange(K) // group)    # groups contiguous
    else:
        assert prep["perm"] is None
    x = _x(M, K, dt, dev, gen, "slice" if act_order else "contig")
    b = torch.randn(N, generator=gen).to(dev, dt) if bias else None
    got = ops.gptq_linear(x, **prep, bits=4, bias=b)
    want = REF.gptq_linear(x.cpu().float(), qw, qz, s.to(dt).float(), g_idx, 4,
                           bias=None if b is None else b.cpu().float())
    assert got.shape == (M, N) and got.dtype == dt
    assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"
    fmts, v2 = launch_spy
    assert fmts == [0], f"prepared GPTQ should run AWQ's kernels, ran formats {fmts}"
    from halinfer.kernels.triton import w4a16
    if M <= 16 and dt != torch.float32 and w4a16.GEMV_IMPL == "v2":
        assert v2 == [True], "M <= 16 fp16 / bf16 should run AWQ's v2 GEMV"


@pytest.mark.parametrize("why,bits,K,N,scatter", [("8bit", 8, 128, 40, False), ("uneven_groups", 4, 128, 40, True)])
def test_prepare_gptq_leaves_what_awq_cannot_take(target, ops, gen, launch_spy, why, bits, K, N, scatter):
    """8-bit (AWQ's kernels unpack nibbles) and groups of unequal sizes stay GPTQ (same tensors)."""
    dev, dt = target.device, target.dtype
    qw, qz, s, g_idx = _gptq_tensors(K, N, 32, False, gen, bits=bits)
    if scatter:     # groups of 16, 48, 32, 32 rows: sorted, they are no plain i // group
        g_idx = torch.cat([torch.zeros(16), torch.ones(48), torch.full((32,), 2), torch.full((32,), 3)]).int()
    args = (qw.to(dev), qz.to(dev), s.to(dev, dt), g_idx.to(dev))
    prep = ops.prepare_gptq(*args, bits)
    keys = ("qweight", "qzeros", "scales", "g_idx")
    assert set(prep) == set(keys) and all(a is prep[k] for a, k in zip(args, keys))
    x = _x(3, K, dt, dev, gen, "contig")
    got = ops.gptq_linear(x, **prep, bits=bits)
    want = REF.gptq_linear(x.cpu().float(), qw, qz, s.to(dt).float(), g_idx, bits)
    assert _rel(got, want) < TOL[dt]
    assert launch_spy[0] == [1]


@pytest.mark.parametrize("M", [1, 9, 40])
def test_awq_weight_shard_views(target, ops, gen, gemv_impl, M):
    """A column shard of qweight / qzeros / scales (row strides of the full matrix)."""
    dev, dt = target.device, target.dtype
    _skip_repeat(gemv_impl, M, dt)
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
    _assert_impl(gemv_impl, M, dt)


def _gemv_inputs(fmt, M, K, N, group, dt, dev, gen):
    q, z, s = _weights(K, N, group, gen, top_bits=True)
    b = torch.randn(N, generator=gen).to(dev, dt)
    if fmt == "awq":
        w = (awq_pack(q), s.to(dt), awq_pack(z), group)
        op, ref = "w4a16_linear", REF.w4a16_linear
    else:
        w = (gptq_pack_rows(q, 4), gptq_pack_cols(z, 4), s.to(dt), (torch.arange(K) // group).int(), 4)
        op, ref = "gptq_linear", REF.gptq_linear
    w_dev = tuple(t.to(dev) if torch.is_tensor(t) else t for t in w)
    w_ref = tuple(t.float() if torch.is_tensor(t) and t.is_floating_point() else t for t in w)

    def want(x):
        return ref(x.cpu().float(), *w_ref, bias=b.cpu().float())
    return op, w_dev, b, want


@pytest.mark.parametrize("fmt", ["awq", "gptq"])
@pytest.mark.parametrize("M", [1, 16])
def test_gemv_v2_split_k_last_program_reduces(target, ops, gen, monkeypatch, fmt, M):
    """v2 with several K splits: every split stores a float32 partial, the last program of each
    N tile (a tile counter) sums them, adds the bias and writes y.  K = 960: the last split is
    shorter (6 K tiles, the others 8); N = 104: the last N tile is partial; called twice on
    new x, so the tile counters must be back at 0 after each call."""
    from halinfer.kernels.triton import w4a16

    dev, dt = target.device, target.dtype
    if dt == torch.float32:
        pytest.skip("v2 is for fp16 / bf16 activations")
    monkeypatch.setattr(w4a16, "GEMV_IMPL", "v2")
    cfgs = []
    real = w4a16._gemv_v2_config

    def spy(*a, **k):
        cfgs.append(real(*a, **k))
        return cfgs[-1]
    monkeypatch.setattr(w4a16, "_gemv_v2_config", spy)
    if not target.interp:
        # compiled tiles are sized for real layers (here one split): force four splits
        monkeypatch.setitem(w4a16.GEMV_V2_CONFIG_OVERRIDE, "config", (256, 64, 4, 4, 4))
    K, N, group = 960, 104, 64
    op, w, b, want = _gemv_inputs(fmt, M, K, N, group, dt, dev, gen)
    for _ in range(2):
        x = _x(M, K, dt, dev, gen, "slice")
        got = getattr(ops, op)(x, *w, bias=b)
        assert got.shape == (M, N) and got.dtype == dt
        assert _rel(got, want(x)) < TOL[dt], f"rel err {_rel(got, want(x)):.2e}"
        assert int(w4a16._counters(x.device, 1).abs().sum()) == 0, "tile counters not re-armed"
    bn, bk, splits = cfgs[0][:3]
    assert splits > 1 and N % bn and K % (bk * splits), cfgs[0]


@pytest.mark.parametrize("fmt", ["awq", "gptq"])
def test_gemv_v2_counters_shared_across_shapes(target, ops, gen, fmt):
    """Two linears of different shapes in turn (as the layers of a decode step): the device's
    one counter buffer serves both, each launch leaving it zeroed."""
    from halinfer.kernels.triton import w4a16

    dev, dt = target.device, target.dtype
    if dt == torch.float32:
        pytest.skip("v2 is for fp16 / bf16 activations")
    a = _gemv_inputs(fmt, 1, 256, 192, 128, dt, dev, gen)      # 3 N tiles, 1 split (interpreter tiles)
    c = _gemv_inputs(fmt, 1, 512, 64, 64, dt, dev, gen)        # 1 N tile, 4 splits
    for op, w, b, want in (a, c, a):
        x = _x(1, w[0].shape[0] * (1 if fmt == "awq" else 8), dt, dev, gen, "contig")
        got = getattr(ops, op)(x, *w, bias=b)
        assert _rel(got, want(x)) < TOL[dt]
    assert int(w4a16._counters(x.device, 1).abs().sum()) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)
@pytest.mark.parametrize("act_order", [False, True], ids=["sorted", "act_order"])
@pytest.mark.parametrize("M", [1, 16, 300])
def test_prepared_gptq_at_llama_shapes(M, act_order):
    """prepare_gptq + gptq_linear at gate_up's shape (4096 -> 28672 cut to 8192 columns) and
    down's K (14336, a K that is no power of two over 128), compiled: the re-laid tensors run
    AWQ's v2 GEMV (M <= 16) / tiles / dequant path and equal the reference on the originals."""
    from halinfer.kernels.triton.ops import TritonOps

    ops, dt = TritonOps(), torch.bfloat16
    for K, N in ((4096, 8192), (14336, 1024)):
        g = torch.Generator().manual_seed(K + M)
        qw, qz, s, gi = _gptq_tensors(K, N, 128, act_order, g)
        prep = ops.prepare_gptq(qw.cuda(), qz.cuda(), s.to("cuda", dt), gi.cuda(), 4)
        assert tuple(prep["qweight"].shape) == (K, N // 8)
        x = torch.randn(M, K, generator=g).to("cuda", dt)
        b = torch.randn(N, generator=g).to("cuda", dt)
        got = ops.gptq_linear(x, **prep, bits=4, bias=b)
        want = REF.gptq_linear(x.cpu().float(), qw, qz, s.to(dt).float(), gi, 4, bias=b.cpu().float())
        assert _rel(got, want) < TOL[dt], f"K={K} N={N}: rel err {_rel(got, want):.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)
@pytest.mark.parametrize("fmt", ["awq", "gptq"])
@pytest.mark.parametrize("M", [1, 5, 16])
def test_gemv_v2_asm_unpack_matches_plain(fmt, M):
    """v2's inline-PTX nibble unpack (two lanes per instruction) against its plain-Triton form
    (the one the interpreter tests), at a Llama-sized shape with split-K.  The same operand
    values go into the same dots, so the outputs should be equal; a wrong unpack is off by O(1)."""
    from halinfer.kernels.triton import w4a16
    from halinfer.kernels.triton.ops import TritonOps

    g = torch.Generator().manual_seed(M)
    ops, dt = TritonOps(), torch.bfloat16
    K, N, group = 4096, 1536, 128
    op, w, b, want = _gemv_inputs(fmt, M, K, N, group, dt, "cuda", g)
    x = torch.randn(M, K, generator=g).to("cuda", dt)
    old = w4a16.GEMV_V2_ASM
    try:
        w4a16.GEMV_V2_ASM = True
        y_asm = getattr(ops, op)(x, *w, bias=b)
        w4a16.GEMV_V2_ASM = False
        y_plain = getattr(ops, op)(x, *w, bias=b)
    finally:
        w4a16.GEMV_V2_ASM = old
    assert _rel(y_asm, y_plain.cpu().float()) < 1e-3, f"asm vs plain: {_rel(y_asm, y_plain.cpu().float()):.1e}"
    assert _rel(y_asm, want(x)) < TOL[dt]


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)
@pytest.mark.parametrize("fmt", ["awq", "gptq", "gptq_act_order", "gptq_prepared", "gptq_prepared_act_order"])
@pytest.mark.parametrize("M", [1, 8, 40])
def test_w4a16_in_a_cuda_graph(M, fmt):
    """Captured once, replayed on new inputs: the graph path of a decode step (gptq_prepared:
    prepare_gptq at "load", then the AWQ kernels, act-order with the x gather inside the graph)."""
    from halinfer.kernels.triton.ops import TritonOps

    g = torch.Generator().manual_seed(M)
    ops, dev, dt = TritonOps(), "cuda", torch.bfloat16
    K, N, group = 512, 384, 128
    q, z, s = _weights(K, N, group, g)
    gi = (torch.arange(K) // group).int()
    if fmt.endswith("act_order"):
        gi = gi[torch.randperm(K, generator=g)]
    if fmt == "awq":
        cpu = (awq_pack(q), s.to(dt), awq_pack(z), group)
        op, ref_op = ops.w4a16_linear, REF.w4a16_linear
    else:
        cpu = (gptq_pack_rows(q, 4), gptq_pack_cols(z, 4), s.to(dt), gi, 4)
        op, ref_op = ops.gptq_linear, REF.gptq_linear
    dev_args = tuple(t.to(dev) if torch.is_tensor(t) else t for t in cpu)
    kw = {}
    if fmt.startswith("gptq_prepared"):
        kw = {**ops.prepare_gptq(*dev_args), "bits": 4}
        assert kw["g_idx"] is None and (kw["perm"] is not None) == fmt.endswith("act_order")
        dev_args = ()

    def run(x):
        return op(x, *dev_args, **kw)

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
