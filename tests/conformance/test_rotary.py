"""rotary: neox and interleaved pairs, partial rotary_dim, strided q/k views."""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops

from .checks import assert_close, ref, untouched
from .params import case, conformance

REF = Ops()
MAX_POS = 4096

ROTARY_CASES = [
    case(f"T{t}_hq{hq}_hk{hk}_d{d}_rot{r}_{'neox' if neox else 'gptj'}{'_strided' if strided else ''}",
         T=t, Hq=hq, Hk=hk, D=d, rot=r, neox=neox, strided=strided,
         features=(("partial",) if r < d else ()) + (("strided",) if strided else ()))
    for t, hq, hk, d, r, strided in [
        (1, 4, 4, 64, 64, False),
        (7, 8, 2, 128, 128, True),
        (1000, 2, 1, 64, 64, False),
        (13, 6, 2, 80, 32, True),      # phi-style partial rotary
        (5, 4, 1, 96, 96, False),
        (9, 4, 2, 128, 64, False),     # GLM-style half rotary
    ]
    for neox in (True, False)
]


def random_cos_sin_cache(rot: int, gen, mscale: float = 1.0) -> torch.Tensor:
    """float32 [MAX_POS, rot] from random frequencies (not models/rope.py: independent of it)."""
    inv_freq = torch.rand(rot // 2, generator=gen, dtype=torch.float64) ** 3 + 1e-4
    ang = torch.arange(MAX_POS, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return (torch.cat((ang.cos(), ang.sin()), -1) * mscale).float()


def _qk(case, dtype, device, gen):
    T, hq, hk, d = case.T, case.Hq, case.Hk, case.D
    if case.strided:  # q and k as views of one fused qkv projection, as models produce them
        qkv = torch.randn(T, (hq + 2 * hk) * d, generator=gen).to(device, dtype)
        q = qkv[:, : hq * d].view(T, hq, d)
        k = qkv[:, hq * d: (hq + hk) * d].view(T, hk, d)
        assert not q.is_contiguous() or T == 1
        return q, k
    return (torch.randn(T, hq, d, generator=gen).to(device, dtype),
            torch.randn(T, hk, d, generator=gen).to(device, dtype))


@conformance("rotary", ROTARY_CASES)
def test_rotary(prov, dtype, case, gen):
    q, k = _qk(case, dtype, prov.device, gen)
    cache = random_cos_sin_cache(case.rot, gen, mscale=1.25)
    pos = torch.randint(0, MAX_POS, (case.T,), generator=gen)
    with untouched(q=q, k=k):
        qo, ko = prov.ops.rotary(q, k, pos.to(prov.device), cache.to(prov.device), is_neox=case.neox)
    eq, ek = REF.rotary(ref(q), ref(k), pos, cache, is_neox=case.neox)
    assert qo.dtype == dtype and ko.dtype == dtype
    assert_close(qo, eq, dtype, factor=2, what="q")
    assert_close(ko, ek, dtype, factor=2, what="k")


# ---- independent check of the reference: rotation as complex multiplication ------

def _complex_rotate(x, cs, neox):
    half = cs.shape[-1] // 2
    rot = torch.complex(cs[:, None, :half].double(), cs[:, None, half:].double())   # m * e^{i theta}
    r = 2 * half
    xr = x[..., :r].double()
    if neox:
        z = torch.complex(xr[..., :half], xr[..., half:]) * rot
        out = torch.cat((z.real, z.imag), -1)
    else:
        z = torch.complex(xr[..., 0::2], xr[..., 1::2]) * rot
        out = torch.stack((z.real, z.imag), -1).flatten(-2)
    return torch.cat((out, x[..., r:].double()), -1)


def test_reference_rotary_is_complex_rotation():
    g = torch.Generator().manual_seed(4)
    for d, r in ((64, 64), (80, 32), (128, 64)):
        cache = random_cos_sin_cache(r, g, mscale=0.9)
        pos = torch.randint(0, MAX_POS, (11,), generator=g)
        q, k = torch.randn(11, 3, d, generator=g), torch.randn(11, 1, d, generator=g)
        for neox in (True, False):
            qo, ko = REF.rotary(q, k, pos, cache, is_neox=neox)
            cs = cache[pos]
            torch.testing.assert_close(qo.double(), _complex_rotate(q, cs, neox), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ko.double(), _complex_rotate(k, cs, neox), atol=1e-5, rtol=1e-5)


def test_reference_rotary_preserves_relative_position():
    # <rot(q, p), rot(k, p')> depends only on p - p' (unit-modulus cache): the property RoPE exists for.
    g = torch.Generator().manual_seed(5)
    cache = random_cos_sin_cache(64, g)
    q, k = torch.randn(1, 1, 64, generator=g), torch.randn(1, 1, 64, generator=g)
    dots = []
    for p in (0, 100, 2000):
        qo, _ = REF.rotary(q, q, torch.tensor([p + 7]), cache)
        ko, _ = REF.rotary(k, k, torch.tensor([p]), cache)
        dots.append(float((qo * ko).sum()))
    assert max(dots) - min(dots) < 1e-3 * max(1.0, abs(dots[0]))
