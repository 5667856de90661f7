"""Helpers for the CUDA kernel tests: tolerances, poisoning, paged caches.

The paged caches are built here from the layout definitions (NHD: [blocks,
block, heads, dim]; HND: [blocks, heads, block, dim]) without the code under
test.  Everything a step's sequences do not own is NaN (int8: 77 with NaN
scales), blocks are handed out in random order, block 0 is never handed out and
the tables are padded with it, so a kernel that reads a slot it does not own
produces NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from halinfer.core.attention import LayerKV, MetadataBuilder, StepInputs

# (atol, rtol) against a float32 reference computed from the same (upcast) inputs.
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}
INT8_POISON = 77


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, factor: float = 1.0, what=""):
    a = actual.detach().cpu().float()
    assert tuple(a.shape) == tuple(expected.shape), f"{what}: shape {tuple(a.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(a).any(), f"{what}: {int(torch.isnan(a).sum())} NaN (unwritten output or poison read)"
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, expected.detach().cpu().float(), atol=atol * factor, rtol=rtol * factor,
                               msg=lambda m: f"{what}: {m}")


def ref(x):
    """The reference's copy of an input: float32 (ints kept) on the CPU."""
    if x is None:
        return None
    x = x.detach().cpu()
    return x.float() if x.is_floating_point() else x.clone()


def dirty(device, nbytes: int) -> None:
    """Leave NaN in memory the allocator will hand out next, so unwritten outputs show."""
    t = torch.full((max(1, nbytes // 4) + 64,), float("nan"), device=device)
    del t


def randn(gen, *shape, dtype, device, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)


@dataclass
class Paged:
    step: StepInputs
    kv: LayerKV
    seq_slots: list[torch.Tensor]   # every position's slot, per sequence

    def meta(self, device):
        return MetadataBuilder(torch.device(device), self.step.block_size).build(self.step)

    def ref_kv(self) -> LayerKV:
        kv = self.kv
        if kv.quantized:
            return LayerKV(kv.k.cpu(), None if kv.v is None else kv.v.cpu(), kv.layout,
                           kv.k_scale.cpu(), None if kv.v_scale is None else kv.v_scale.cpu())
        return LayerKV(ref(kv.k), ref(kv.v), kv.layout)


def cache_index(layout: str, slots: torch.Tensor, bs: int):
    slots = slots.long().cpu()
    return slots // bs, slots % bs


def write(cache: torch.Tensor, layout: str, slots: torch.Tensor, x: torch.Tensor, bs: int):
    blk, off = cache_index(layout, slots, bs)
    blk, off = blk.to(cache.device), off.to(cache.device)
    if layout == "NHD":
        cache[blk, off] = x.to(cache.device, cache.dtype)
    else:
        cache[blk, :, off] = x.to(cache.device, cache.dtype)


def read(cache: torch.Tensor, layout: str, slots: torch.Tensor, bs: int) -> torch.Tensor:
    blk, off = cache_index(layout, slots, bs)
    blk, off = blk.to(cache.device), off.to(cache.device)
    return cache[blk, off] if layout == "NHD" else cache[blk, :, off]


def quantize(x: torch.Tensor):
    """Symmetric int8 per (token, head): x ~ q * s."""
    s = (x.float().abs().amax(-1) / 127.0).clamp(min=1e-8)
    return torch.round(x.float() / s[..., None]).clamp(-128, 127).to(torch.int8), s


def poisoned(layout, nb, bs, hk, d, dtype, device, int8=False):
    shape = (nb, bs, hk, d) if layout == "NHD" else (nb, hk, bs, d)
    if int8:
        return (torch.full(shape, INT8_POISON, dtype=torch.int8, device=device),
                torch.full(shape[:-1], float("nan"), dtype=torch.float32, device=device))
    return torch.full(shape, float("nan"), dtype=dtype, device=device), None


def paged_plan(seqs, bs, gen, extra_width=1):
    """seqs [(cached, new)] -> (StepInputs, every position's slot per sequence, number of blocks).
    Blocks are handed out in random order; block 0 is never handed out and pads the tables."""
    nblk = [-(-(c + q) // bs) for c, q in seqs]
    nb = sum(nblk) + 2
    order = (torch.randperm(nb - 1, generator=gen) + 1).tolist()   # block 0 stays poison
    tables = np.zeros((len(seqs), max(nblk) + extra_width), dtype=np.int32)
    for i, n in enumerate(nblk):
        tables[i, :n] = order[:n]
        order = order[n:]
    seq_slots, new_slots = [], []
    for i, (c, q) in enumerate(seqs):
        pos = np.arange(c + q)
        sl = tables[i][pos // bs].astype(np.int64) * bs + pos % bs
        seq_slots.append(torch.from_numpy(sl))
        new_slots.append(sl[c:])
    step = StepInputs(np.array([q for _, q in seqs], np.int32), np.array([c + q for c, q in seqs], np.int32),
                      tables, np.concatenate(new_slots), bs)
    return step, seq_slots, nb


def make_paged(seqs, hk, d, bs, dtype, device, gen, *, dv=None, mla=False, int8=False, layout="NHD",
               extra_width=1) -> Paged:
    """seqs: [(cached tokens, new tokens)]; every position up to seq_len is written
    (as store_kv would have done before attention runs)."""
    step, seq_slots, nb = paged_plan(seqs, bs, gen, extra_width)
    dv = dv or d
    kc, ks = poisoned(layout, nb, bs, hk, d, dtype, device, int8)
    vc, vs = (None, None) if mla else poisoned(layout, nb, bs, hk, dv, dtype, device, int8)
    for sl in seq_slots:
        for cache, scales, width in ((kc, ks, d), (vc, vs, dv)):
            if cache is None:
                continue
            x = torch.randn(len(sl), hk, width, generator=gen).to(dtype)
            if int8:
                x, s = quantize(x)
                write(scales, layout, sl, s, bs)   # [n, Hk] scales index like the cache minus its last dim
            write(cache, layout, sl, x, bs)
    return Paged(step, LayerKV(kc, vc, layout, ks, vs), seq_slots)


def check_prequant_gemm(ops, qa, y, spec, N: int, gen, target) -> None:
    """A fused quantizer's output qa through *_linear_prequant gives the very output of its
    unfused input y through *_linear, with random int8 / block-scaled FP8 weights [N, K] and a
    bias, through whichever GEMM the dispatch picks.  Interpreter: bit for bit; compiled: a code
    one step apart moves the output by about one activation step (1% of its range)."""
    K = y.shape[-1]
    bias = torch.randn(N, generator=gen).to(target.device, target.dtype)
    if spec.kind == "int8":
        wq = torch.randint(-127, 128, (N, K), generator=gen, dtype=torch.int8).to(target.device)
        wsc = (torch.rand(N, generator=gen) * 1e-3 + 1e-4).to(target.device)
        fused, plain = ops.w8a8_linear_prequant(qa, wq, wsc, bias), ops.w8a8_linear(y, wq, wsc, bias)
    else:
        bk = min(spec.group, K)
        wq = (torch.randn(N, K, generator=gen) * 100).clamp(-448, 448).to(torch.float8_e4m3fn).to(target.device)
        rows = torch.rand(-(-N // 128), -(-K // bk), generator=gen) * 1e-3 + 1e-4
        wsc = rows.repeat_interleave(128, dim=0)[:N].contiguous().to(target.device)   # block-scaled: 128-row blocks
        fused, plain = ops.fp8_linear_prequant(qa, wq, wsc, bk, bias), ops.fp8_linear(y, wq, wsc, bk, bias)
    assert fused.shape == plain.shape == (y.shape[0], N) and fused.dtype == plain.dtype == y.dtype
    diff = float((fused.float() - plain.float()).abs().max())
    if target.interp:
        assert torch.equal(fused.cpu(), plain.cpu()), f"max diff {diff}"
    else:
        assert diff <= 1e-2 * float(plain.float().abs().max()), f"max diff {diff}"


def quant_bytes(q):
    """int8 codes as they are, fp8 codes as their bytes (on the CPU), for exact comparison."""
    return q.cpu().view(torch.uint8) if q.dtype != torch.int8 else q.cpu()


def allowed_fp8_miss(target, spec, width, q, rq) -> bool:
    """act_quant's own GPU finding (test_act_quant.py): compiled, float32, one group per row, one
    byte in ~20,000 one e4m3 step apart from the torch reference; the fused kernels get the same."""
    step = (quant_bytes(q).int() - quant_bytes(rq).int()).abs()
    return (not target.interp and target.dtype == torch.float32 and spec.group >= width
            and bool((step <= 1).all()) and int((step > 0).sum()) * 10_000 <= step.numel())


def near_quant(target, q, qs, uq, us, what: str) -> None:
    """A fused quantizer's q / scales equal the unfused ones; compiled, up to a last-bit rounding
    of the fused row reduction: scales within 4 ulps of the dtype, codes at most one step apart
    (fp8 bytes of one sign are ordered like their values) in at most 1% of the elements."""
    if torch.equal(qs.cpu(), us.cpu()) and torch.equal(quant_bytes(q), quant_bytes(uq)):
        return
    assert not target.interp, f"{what}: the interpreter must give the unfused bits"
    ulp = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}[target.dtype]
    rel = float(((qs.cpu() - us.cpu()).abs() / us.cpu().abs().clamp(min=1e-30)).max())
    step = (quant_bytes(q).int() - quant_bytes(uq).int()).abs()
    assert rel <= 4 * ulp, f"{what}: scales {rel:.2e} apart (relative)"
    assert int(step.max()) <= 1 and int((step > 0).sum()) * 100 <= step.numel(), \
        f"{what}: {int((step > 0).sum())} of {step.numel()} codes differ, by up to {int(step.max())}"

