"""The emulated torch_npu itself: documented math, and refusal of wrong argument kinds.

If these did not hold, the plugin tests that run on the emulation would prove nothing."""
from __future__ import annotations

import math

import pytest
import torch

from .emulation.checks import VendorArgError
from .emulation.npu import NpuConfig, build_torch_npu

npu = build_torch_npu(NpuConfig())
MASK = torch.triu(torch.ones(2048, 2048, dtype=torch.bool), 1)


def _paged(g, seqs, kvh, d, bs, dtype=torch.float16):
    """Random caches [nb, bs, kvh*d] and a block table for sequences of the given lengths."""
    nb = sum(-(-n // bs) for n in seqs) + 1
    k = torch.randn(nb, bs, kvh * d, generator=g).to(dtype)
    v = torch.randn(nb, bs, kvh * d, generator=g).to(dtype)
    width = max(-(-n // bs) for n in seqs)
    table = torch.zeros(len(seqs), width, dtype=torch.int32)
    nxt = 1
    for i, n in enumerate(seqs):
        for j in range(-(-n // bs)):
            table[i, j] = nxt
            nxt += 1
    return k, v, table


def _dense(k, v, table, i, n, kvh, d, bs):
    blocks = table[i, : -(-n // bs)].long()
    kk = k[blocks].reshape(-1, kvh, d)[:n].float()
    vv = v[blocks].reshape(-1, kvh, d)[:n].float()
    return kk, vv


def test_fia_tnd_prefill_is_bottom_right_causal_attention_over_the_pages():
    g = torch.Generator().manual_seed(0)
    kvh, h, d, bs = 2, 4, 128, 128
    kv_lens, q_lens = [130, 5], [3, 5]
    k, v, table = _paged(g, kv_lens, kvh, d, bs)
    q = torch.randn(sum(q_lens), h, d, generator=g).to(torch.float16)
    out, _ = npu.npu_fused_infer_attention_score(
        q, k, v, actual_seq_lengths=[3, 8], actual_seq_lengths_kv=kv_lens, block_table=table, num_heads=h,
        num_key_value_heads=kvh, scale=1 / math.sqrt(d), input_layout="TND", sparse_mode=3, atten_mask=MASK,
        block_size=bs)
    s = 0
    for i, (m, n) in enumerate(zip(q_lens, kv_lens)):
        kk, vv = _dense(k, v, table, i, n, kvh, d, bs)
        qq = q[s:s + m].float()
        for hh in range(h):
            sc = qq[:, hh] @ kk[:, hh // 2].t() / math.sqrt(d)
            allowed = torch.arange(n)[None, :] <= torch.arange(n - m, n)[:, None]
            p = torch.softmax(sc.masked_fill(~allowed, -1e30), -1)
            torch.testing.assert_close(out[s:s + m, hh].float(), p @ vv[:, hh // 2], atol=2e-3, rtol=2e-3)
        s += m


@pytest.mark.parametrize("bad, match", [
    (dict(actual_seq_lengths_kv=torch.tensor([130, 5])), "host-side SymInt"),
    (dict(actual_seq_lengths=[3, 7]), "cumulative query ends"),
    (dict(block_table=torch.zeros(2, 2, dtype=torch.int64)), "block_table dtype"),
    (dict(block_table=[[1, 2], [3, 0]]), "must be a device tensor"),
    (dict(scale=torch.tensor(0.1)), "scale must be a Python float"),
    (dict(atten_mask=MASK[:1024, :1024]), "2048x2048"),
    (dict(sparse_mode=2), "sparse_mode 0 and 3"),
])
def test_fia_rejects_arguments_of_the_wrong_kind(bad, match):
    g = torch.Generator().manual_seed(1)
    k, v, table = _paged(g, [130, 5], 2, 128, 128)
    kw = dict(actual_seq_lengths=[3, 8], actual_seq_lengths_kv=[130, 5], block_table=table, num_heads=4,
              num_key_value_heads=2, scale=0.1, input_layout="TND", sparse_mode=3, atten_mask=MASK, block_size=128)
    kw.update(bad)
    with pytest.raises(VendorArgError, match=match):
        npu.npu_fused_infer_attention_score(torch.zeros(8, 4, 128, dtype=torch.float16), k, v, **kw)


def test_fia_tnd_needs_head_dim_128_and_bsnd_prefill_needs_128_multiple_blocks():
    g = torch.Generator().manual_seed(2)
    k, v, table = _paged(g, [20], 2, 64, 64)
    with pytest.raises(VendorArgError, match="head dim 128"):
        npu.npu_fused_infer_attention_score(
            torch.zeros(4, 4, 64, dtype=torch.float16), k, v, actual_seq_lengths=[4], actual_seq_lengths_kv=[20],
            block_table=table, num_heads=4, num_key_value_heads=2, scale=0.1, input_layout="TND", block_size=64)
    with pytest.raises(VendorArgError, match="multiple of 128"):
        npu.npu_fused_infer_attention_score(
            torch.zeros(1, 4, 4, 64, dtype=torch.float16), k, v, actual_seq_lengths=[4], actual_seq_lengths_kv=[20],
            block_table=table, num_heads=4, num_key_value_heads=2, scale=0.1, input_layout="BSND", block_size=64,
            sparse_mode=3, atten_mask=MASK)


def test_fia_bsnd_padding_rows_are_garbage():
    g = torch.Generator().manual_seed(3)
    k, v, table = _paged(g, [9, 3], 1, 64, 128)
    out, _ = npu.npu_fused_infer_attention_score(
        torch.randn(2, 4, 2, 64, generator=g).half(), k, v, actual_seq_lengths=[4, 2], actual_seq_lengths_kv=[9, 3],
        block_table=table, num_heads=2, num_key_value_heads=1, scale=0.1, input_layout="BSND", block_size=128,
        sparse_mode=3, atten_mask=MASK)
    assert torch.isnan(out[1, 2:]).all() and not torch.isnan(out[0]).any()


def test_reshape_and_cache_skips_negative_slots_and_fails_on_empty():
    kc = torch.zeros(2, 128, 2, 64, dtype=torch.float16)
    vc = torch.zeros_like(kc)
    k = torch.ones(3, 2, 64, dtype=torch.float16)
    npu._npu_reshape_and_cache(k, k * 2, kc, vc, torch.tensor([5, -1, 130], dtype=torch.int32))
    assert kc[0, 5].eq(1).all() and vc[1, 2].eq(2).all() and kc.sum() == 2 * 2 * 64
    with pytest.raises(VendorArgError, match="empty slot"):
        npu._npu_reshape_and_cache(k[:0], k[:0], kc, vc, torch.zeros(0, dtype=torch.int32))
    with pytest.raises(VendorArgError, match="slot_indices dtype"):
        npu._npu_reshape_and_cache(k, k, kc, vc, torch.tensor([5, -1, 130]))


def test_quant_matmul_dtype_rules_and_exact_product():
    x = torch.randint(-127, 128, (3, 16), dtype=torch.int8)
    w = torch.randint(-127, 128, (16, 5), dtype=torch.int8)
    s, ps = torch.rand(5), torch.rand(3)
    y = npu.npu_quant_matmul(x, w, s, pertoken_scale=ps, output_dtype=torch.bfloat16)
    want = (x.double() @ w.double()) * s.double() * ps.double()[:, None]
    torch.testing.assert_close(y.double(), want.to(torch.bfloat16).double())
    with pytest.raises(VendorArgError, match="not a documented pair"):
        npu.npu_quant_matmul(x, w, s.bfloat16(), pertoken_scale=ps, output_dtype=torch.float16)


def test_weight_quant_batchmatmul_reads_signed_in_order_nibbles():
    # one int32 word: columns 0..7 hold 0, 1, ..., 7 as signed nibbles, plus offsets
    word = sum((j & 0xF) << (4 * j) for j in range(8))
    w = torch.tensor([[word]], dtype=torch.int32)
    x = torch.ones(1, 1, dtype=torch.float16)
    scale = torch.full((1, 8), 0.5, dtype=torch.float16)
    off = torch.full((1, 8), 1.0, dtype=torch.float16)
    y = npu.npu_weight_quant_batchmatmul(x, w, scale, antiquant_offset=off, antiquant_group_size=1)
    assert y.tolist() == [[(j + 1) * 0.5 for j in range(8)]]


def test_moe_routing_ops_compose_to_weighted_expert_sum():
    g = torch.Generator().manual_seed(4)
    T, E, k, H, I = 5, 4, 2, 8, 6
    x = torch.randn(T, H, generator=g).half()
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).int()
    w = torch.rand(T, k, generator=g).half()
    xs, rows, counts, _ = npu.npu_moe_init_routing_v2(x, ids, active_num=T * k, expert_num=E,
                                                      expert_tokens_num_type=1, expert_tokens_num_flag=True,
                                                      active_expert_range=[0, E])
    wt = torch.randn(E, H, I, generator=g).half()
    y = npu.npu_grouped_matmul([xs], [wt], group_list=counts, split_item=2, group_type=0, group_list_type=1)[0]
    out = npu.npu_moe_token_unpermute(y, rows, probs=w)
    want = torch.stack([sum(w[t, j].float() * (x[t].float() @ wt[ids[t, j]].float()) for j in range(k))
                        for t in range(T)])
    torch.testing.assert_close(out.float(), want, atol=1e-2, rtol=1e-2)


# ---- the emulated releases hold calls to the real signatures ---------------------------------

old = build_torch_npu(NpuConfig(release="v2.5.1-7.0.0"))


def _rotary_args():
    q = torch.zeros(1, 2, 1, 64, dtype=torch.float16)
    cos = torch.ones(1, 2, 1, 64, dtype=torch.float16)
    return q, q.clone(), cos, cos * 0


def test_rotary_mode_is_refused_where_op_plugin_lacks_it():
    with pytest.raises(VendorArgError, match="unexpected keyword argument 'rotary_mode'"):
        old.npu_apply_rotary_pos_emb(*_rotary_args(), layout="BSND", rotary_mode="half")
    old.npu_apply_rotary_pos_emb(*_rotary_args(), layout="BSND")
    npu.npu_apply_rotary_pos_emb(*_rotary_args(), layout="BSND", rotary_mode="half")   # 7dee02b on


def test_each_release_exposes_only_its_ops():
    assert not hasattr(old, "npu_moe_token_unpermute") and hasattr(npu, "npu_moe_token_unpermute")
    assert hasattr(old, "npu_moe_init_routing_v2") and hasattr(old, "_npu_paged_attention")


def test_keyword_only_arguments_cannot_be_passed_positionally_and_required_ones_must_be_given():
    x = torch.zeros(2, 8, dtype=torch.float16)
    with pytest.raises(VendorArgError, match="positional"):
        npu.npu_dynamic_quant(x, None)                 # smooth_scales is after the '*'
    with pytest.raises(VendorArgError, match="missing required"):
        npu.npu_rms_norm(x)
    with pytest.raises(VendorArgError, match="unexpected keyword argument 'eps'"):
        npu.npu_rms_norm(x, torch.ones(8, dtype=torch.float16), eps=1e-6)


def test_plugin_probes_follow_the_schema_of_each_release():
    from halinfer.plugins.ascend.features import OpFeatures

    assert OpFeatures.probe(old) == OpFeatures(rotary_mode=False, moe_token_unpermute=False)
    mid = build_torch_npu(NpuConfig(release="v2.6.0-7.1.0"))
    assert OpFeatures.probe(mid) == OpFeatures(rotary_mode=False, moe_token_unpermute=True)
    assert OpFeatures.probe(npu) == OpFeatures(rotary_mode=True, moe_token_unpermute=True)


def test_atb_wrappers_exist_without_nnal_and_raise_oserror_when_called():
    bare = build_torch_npu(NpuConfig(atb=False))
    assert hasattr(bare, "_npu_paged_attention")
    with pytest.raises(OSError, match="nnal"):
        bare._npu_paged_attention()


def test_300i_duo_atb_ops_refuse_nd_caches_and_large_blocks():
    p = build_torch_npu(NpuConfig(soc="310P"))
    k = torch.ones(2, 2, 64, dtype=torch.float16)
    slots = torch.tensor([0, 1], dtype=torch.int32)
    nd = torch.zeros(4, 128, 2, 64, dtype=torch.float16)
    with pytest.raises(VendorArgError, match="FRACTAL_NZ"):
        p._npu_reshape_and_cache(k, k, nd, nd.clone(), slots)
    def nz(*shape):
        return p.empty_with_format(list(shape), dtype=torch.float16, acl_format=29)

    with pytest.raises(VendorArgError, match="<= 128"):
        p._npu_reshape_and_cache(k, k, nz(4, 8, 256, 16), nz(4, 8, 256, 16), slots)
    kc = nz(4, 8, 128, 16)
    p._npu_reshape_and_cache(k, k * 2, kc, nz(4, 8, 128, 16), slots)
    assert kc[0, :, 1].eq(1).all() and kc.sum() == 2 * 128


def test_300i_duo_flash_attention_needs_16_aligned_tokens_and_an_nz_mask():
    from halinfer.plugins.ascend import nz as plugin_nz

    p = build_torch_npu(NpuConfig(soc="310P"))
    q = torch.randn(16, 2, 64).half()
    out = torch.empty_like(q)
    nd_mask = torch.full((16, 16), float("-inf")).triu(1).half()
    with pytest.raises(VendorArgError, match="mask must be 4-D"):
        p._npu_flash_attention(q, q, q, nd_mask, torch.tensor([16], dtype=torch.int32), 0.1, 2, 2, out)
    mask = plugin_nz.causal_mask(p, 16, q.device)
    with pytest.raises(VendorArgError, match="multiple of 16"):
        p._npu_flash_attention(q[:9], q[:9], q[:9], mask, torch.tensor([9], dtype=torch.int32), 0.1, 2, 2, out[:9])
    p._npu_flash_attention(q, q, q, mask, torch.tensor([16], dtype=torch.int32), 0.1, 2, 2, out)
