"""The vendor encoder-attention ops the plugins call for vision towers, under emulation:
Ascend A2 takes ATB _npu_flash_attention_unpad (dlinfer's ViT path; the 300I Duo and
float32 fall back to the reference), Cambricon TMO flash_attention non-causal over the
packed images.  Numerics against an independent per-image SDPA; that the vendor op (not
the reference) ran is checked by counting its calls."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .conftest import make_ascend, make_camb

LENS = [5, 17, 1, 33]   # images (or windows) of odd sizes, one of a single patch


def _inputs(dtype, H=3, D=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = sum(LENS)
    q, k, v = (torch.randn(N, H, D, generator=g).to(dtype) for _ in range(3))
    cu = torch.tensor([0] + torch.tensor(LENS).cumsum(0).tolist(), dtype=torch.int32)
    return q, k, v, cu


def _expected(q, k, v, cu, scale):
    parts = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qs, ks, vs = (t[a:b].float().transpose(0, 1)[None] for t in (q, k, v))
        parts.append(F.scaled_dot_product_attention(qs, ks, vs, scale=scale)[0].transpose(0, 1))
    return torch.cat(parts)


def _count(obj, name, monkeypatch):
    calls = []
    real = getattr(obj, name)

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(obj, name, spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ascend_a2_vision_attention_runs_atb_unpad(npu_emulation, dtype, monkeypatch):
    b = make_ascend(npu_emulation)
    ops = b.ops
    calls = _count(ops.npu, "_npu_flash_attention_unpad", monkeypatch)
    q, k, v, cu = _inputs(dtype)
    out = ops.vision_attention(q, k, v, cu, 48 ** -0.5)
    assert calls, "the ATB op must run for half-precision inputs on A2"
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), _expected(q, k, v, cu, 48 ** -0.5), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("soc,dtype", [("A2", torch.float32), ("310P", torch.float16)])
def test_ascend_vision_attention_falls_back_where_the_op_does_not_apply(npu_emulation, soc, dtype, monkeypatch):
    b = make_ascend(npu_emulation, soc=soc)
    calls = _count(b.ops.npu, "_npu_flash_attention_unpad", monkeypatch)
    q, k, v, cu = _inputs(dtype)
    out = b.ops.vision_attention(q, k, v, cu, 0.2)
    assert not calls
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), _expected(q, k, v, cu, 0.2), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_camb_vision_attention_runs_tmo_flash_attention_non_causal(mlu_emulation, dtype, monkeypatch):
    b = make_camb(mlu_emulation)
    calls = _count(b.ops.tmo, "flash_attention", monkeypatch)
    q, k, v, cu = _inputs(dtype, seed=1)
    out = b.ops.vision_attention(q, k, v, cu, 0.15)
    assert calls
    torch.testing.assert_close(out.float(), _expected(q, k, v, cu, 0.15), atol=2e-2, rtol=2e-2)
