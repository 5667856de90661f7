"""Comparison helpers: per-dtype tolerances, poisoning, input-untouched checks.

The reference is always computed in float32 on the CPU from the *same*
low-precision inputs the provider saw (upcast), so the tolerance only has to
cover the provider's own rounding, not two different rounding chains.
"""
from __future__ import annotations

import contextlib

import torch

# (atol, rtol) for outputs of the given dtype, against a float32 reference on
# values of order one.  Ops with long reductions pass a factor.
TOL = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def ref(x):
    """The reference's view of an input: same values, float32 (ints kept), on the CPU."""
    if x is None:
        return None
    x = x.detach().cpu()
    return x.float() if x.is_floating_point() else x.clone()


def to(x, dtype, device):
    return None if x is None else x.to(device=device, dtype=dtype)


def assert_close(actual, expected, dtype, *, factor=1.0, scale=None, what="output"):
    """``actual`` (provider, any device) equals ``expected`` (float32 reference).

    ``scale``: absolute tolerance is relative to this magnitude (for GEMM outputs
    whose size grows with K), default 1.
    """
    assert isinstance(actual, torch.Tensor), f"{what}: expected a tensor, got {type(actual).__name__}"
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().cpu().float()
    assert not torch.isnan(a).any(), f"{what}: {int(torch.isnan(a).sum())} NaN elements (unwritten output?)"
    atol, rtol = TOL[dtype]
    atol *= factor * (1.0 if scale is None else float(scale))
    rtol *= factor
    torch.testing.assert_close(a, expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def assert_within(actual, expected, bound, what="output"):
    """|actual - expected| <= bound elementwise (bound broadcasts), NaN never passes."""
    a, e = actual.detach().cpu().float(), expected.float()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs()
    bad = ~(err <= bound)
    if bad.any():
        i = tuple(int(v) for v in bad.nonzero()[0])
        raise AssertionError(f"{what}: {int(bad.sum())}/{a.numel()} elements off; first at {i}: "
                             f"got {float(a[i]):.6g}, want {float(e[i]):.6g}, allowed error "
                             f"{float(bound.expand_as(err)[i] if isinstance(bound, torch.Tensor) else bound):.3g}")


def rms(x) -> float:
    return float(x.float().pow(2).mean().sqrt().clamp(min=1e-6))


def same_bits(a, b) -> bool:
    """Equal element for element, NaN equal to NaN (for 'untouched' checks)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return bool((a == b).all())


@contextlib.contextmanager
def untouched(**tensors):
    """Assert the op does not write into its inputs (named for the message)."""
    before = {k: v.clone() for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    yield
    for k, v in before.items():
        assert same_bits(tensors[k], v), f"the op modified its input {k!r}"


def dirty_allocator(device, nbytes: int) -> None:
    """Best effort: leave NaN in freed memory of about ``nbytes`` so an output the
    op forgets to write shows up as NaN (caching allocators reuse such blocks;
    malloc often does for small sizes)."""
    n = max(1, nbytes // 4)
    for _ in range(2):
        t = torch.full((n,), float("nan"), dtype=torch.float32, device=device)
        del t


def quant_bytes(q):
    """int8 codes as they are, fp8 codes as their bytes (on the CPU), for exact comparison."""
    q = q.detach().cpu()
    return q if q.dtype == torch.int8 else q.view(torch.uint8)


def same_quant_bits(prov, dtype, q, sc, uq, us, of: str) -> None:
    """q / scales are the quantization of the provider's own ``of`` output (computed unfused:
    uq / us).  Bit for bit on the CPU (the reference, the emulated vendors, the Triton
    interpreter); on a GPU a fused kernel may reduce a row in another order than the provider's
    unfused kernel (the H200 showed last-bit differences in the norm): scales within 4 ulps of the
    dtype, and at most 1% of the codes one step apart."""
    if torch.equal(sc.cpu(), us.cpu()) and torch.equal(quant_bytes(q), quant_bytes(uq)):
        return
    assert prov.device.type != "cpu", f"scales or codes differ from quantizing {of}'s output"
    ulp = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}[dtype]
    rel = float(((sc.cpu() - us.cpu()).abs() / us.cpu().abs().clamp(min=1e-30)).max())
    step = (quant_bytes(q).int() - quant_bytes(uq).int()).abs()
    assert rel <= 4 * ulp, f"scales {rel:.2e} (relative) from quantizing {of}'s output"
    assert int(step.max()) <= 1 and int((step > 0).sum()) * 100 <= step.numel(), \
        f"{int((step > 0).sum())} of {step.numel()} codes differ from quantizing {of}'s output"
