"""The emulated Cambricon and MetaX libraries: documented math and argument rules."""
from __future__ import annotations

import math

import pytest
import torch

from .emulation.checks import VendorArgError
from .emulation.maca import flash_attn as fa
from .emulation.maca import kernels as mc
from .emulation.mlu import MluConfig, tmo as tmo_mod

tmo = tmo_mod.build(MluConfig())


def test_apply_rotary_takes_sin_before_cos():
    x = torch.randn(1, 3, 2, 8)
    angle = torch.rand(3, 4)
    sin = torch.cat((angle.sin(), angle.sin()), -1)
    cos = torch.cat((angle.cos(), angle.cos()), -1)
    a = x.clone()
    tmo.apply_rotary(a, sin, cos, None, None, False, False, False, 3)
    z = torch.complex(x[..., :4], x[..., 4:]) * torch.polar(torch.ones(3, 1, 4), angle[:, None, :])
    torch.testing.assert_close(a[0], torch.cat((z.real, z.imag), -1)[0], atol=1e-5, rtol=1e-5)
    b = x.clone()
    tmo.apply_rotary(b, cos, sin, None, None, False, False, False, 3)   # swapped: a different rotation
    assert not torch.allclose(a, b, atol=1e-3)


def test_reshape_paged_cache_is_hnd_int32_and_skips_negative_slots():
    kc, vc = torch.zeros(3, 2, 16, 4), torch.zeros(3, 2, 16, 4)
    k = torch.arange(2 * 2 * 4, dtype=torch.float32).view(2, 2, 4)
    tmo.reshape_paged_cache(k, k + 1, kc, vc, torch.tensor([17, -1], dtype=torch.int32))
    assert torch.equal(kc[1, :, 1], k[0]) and kc.count_nonzero() == k[0].count_nonzero()
    with pytest.raises(VendorArgError, match="slot_mapping dtype"):
        tmo.reshape_paged_cache(k, k, kc, vc, torch.tensor([17, -1]))


def test_flash_attention_refuses_an_out_aliasing_q_and_too_small_bounds():
    q = torch.randn(4, 2, 8).half()
    k = torch.randn(2, 2, 16, 8).half()
    cu = torch.tensor([0, 4], dtype=torch.int32)
    cukv = torch.tensor([0, 20], dtype=torch.int32)
    table = torch.tensor([[0, 1]], dtype=torch.int32)
    args = (cu, cukv, None, None, 4, 20, 0.3, True, -1, -1, torch.float, False)
    with pytest.raises(VendorArgError, match="must not alias q"):
        tmo.flash_attention(q, k, k, q, *args, block_tables=table)
    with pytest.raises(VendorArgError, match="below the longest"):
        tmo.flash_attention(q, k, k, None, cu, cukv, None, None, 4, 19, 0.3, True, -1, -1, torch.float, False,
                            block_tables=table)
    out = tmo.flash_attention(q, k, k, None, *args, block_tables=table)
    kk = k.transpose(1, 2).reshape(-1, 2, 8)[:20].float()
    s = torch.einsum("qhd,khd->hqk", q.float(), kk) * 0.3
    allowed = torch.arange(20)[None, :] <= torch.arange(16, 20)[:, None]     # bottom-right causal
    p = torch.softmax(s.masked_fill(~allowed, -math.inf), -1)
    torch.testing.assert_close(out.float(), torch.einsum("hqk,khd->qhd", p, kk), atol=2e-3, rtol=2e-3)


def test_single_query_attention_bounds_and_returns_nothing():
    q = torch.randn(1, 1, 2, 8).half()
    kc = torch.randn(2, 1, 16, 8).half()
    out = torch.empty_like(q)
    args = (torch.tensor([[0, 1]], dtype=torch.int32), torch.tensor([20], dtype=torch.int32), None, None, None)
    with pytest.raises(VendorArgError, match="max_context_len 8 below"):
        tmo.single_query_cached_kv_attn(q, kc, kc, out, *args, 8, -1, -1, 0.3)
    assert tmo.single_query_cached_kv_attn(q, kc, kc, out, *args, -1, -1, -1, 0.3) is None
    assert torch.isfinite(out).all()


def test_moe_index_ops_round_trip():
    ids = torch.tensor([[2, 0], [0, 1], [2, 1]], dtype=torch.int32)
    expand, combine, counts, cusum = tmo.moe_gen_idx(ids, 3)
    assert counts.tolist() == [2, 2, 2] and cusum.tolist() == [0, 2, 4, 6]
    # expert-sorted copies: token of each, and each (t, j)'s row comes back to the same token
    assert expand.tolist() == [0, 1, 1, 2, 0, 2]
    assert all(int(expand[combine[t * 2 + j]]) == t for t in range(3) for j in range(2))


def test_maca_rotary_reads_only_the_first_half_of_each_row():
    T, H, D = 2, 1, 8
    q = torch.randn(T, H * D).half()
    angle = torch.rand(10, 4)
    cos = torch.cat((angle.cos(), torch.full((10, 4), 9.0)), -1).half()   # second half: junk, unread
    sin = torch.cat((angle.sin(), torch.full((10, 4), 9.0)), -1).half()
    pos = torch.tensor([3, 7])
    a, k = q.clone(), q.clone()
    mc.lmdeploy_rotary_embedding(pos, a, k, D, cos, sin, True)
    z = torch.complex(q[:, :4].float(), q[:, 4:].float()) * torch.polar(torch.ones(T, 4), angle[pos].half().float())
    torch.testing.assert_close(a.float(), torch.cat((z.real, z.imag), -1), atol=3e-3, rtol=3e-3)
    with pytest.raises(VendorArgError, match="positions dtype"):
        mc.lmdeploy_rotary_embedding(pos.int(), a, k, D, cos, sin, True)


def test_reshape_and_cache_flash_wants_int64_slots_and_packed_heads():
    kc = torch.zeros(2, 16, 2, 4).half()
    qkv = torch.randn(3, 3 * 2 * 4).half()
    k = qkv[:, :8].view(3, 2, 4)                   # a view of a fused projection: token stride 24
    one = torch.ones(())
    mc.reshape_and_cache_flash(k, k, kc, kc.clone(), torch.tensor([0, -1, 20]), "auto", one, one)
    assert torch.equal(kc[1, 4], k[2]) and torch.equal(kc[0, 0], k[0])
    with pytest.raises(VendorArgError, match="slot_mapping dtype"):
        mc.reshape_and_cache_flash(k, k, kc, kc, torch.tensor([0, -1, 20], dtype=torch.int32), "auto", one, one)
    with pytest.raises(VendorArgError, match="heads must be packed"):
        mc.reshape_and_cache_flash(k.transpose(0, 1).contiguous().transpose(0, 1), k, kc, kc,
                                   torch.tensor([0, 1, 2]), "auto", one, one)


def test_flash_attn_alibi_and_window_follow_fa2():
    g = torch.Generator().manual_seed(0)
    kc = torch.randn(2, 16, 1, 8, generator=g).half()
    vc = torch.randn(2, 16, 1, 8, generator=g).half()
    q = torch.randn(1, 1, 2, 8, generator=g).half()
    table = torch.tensor([[1, 0]], dtype=torch.int32)
    lens = torch.tensor([12], dtype=torch.int32)
    slopes = torch.tensor([0.5, 0.25])
    out = fa.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, block_table=table, softmax_scale=0.3,
                                     causal=True, window_size=(4, -1), alibi_slopes=slopes)
    k, v = kc[1, :12, 0].float(), vc[1, :12, 0].float()
    for h in range(2):
        s = q[0, 0, h].float() @ k.t() * 0.3 - slopes[h] * (11 - torch.arange(12))
        s[:7] = -math.inf                                                   # window: keys 7..11 (left=4)
        torch.testing.assert_close(out[0, 0, h].float(), torch.softmax(s, -1) @ v, atol=2e-3, rtol=2e-3)
