"""Emulated ATB ops (torch.ops.atb.* behind torch_npu's lazy _npu_* wrappers).

Schemas: op-plugin ``op_plugin/ops/atb/*.cpp`` (releases.json).  Semantics and
limits: vendors/ascend.md §3.3/§4 and op-plugin ``_atb_api_docs.py`` (7dee02b,
``_npu_paged_attention_v2`` section) for the "Atlas 推理系列产品" (300I Duo, 310P):
key/value caches NZ, (num_blocks, kv_heads*head_dim/16, block_size, 16); float16 only;
block_size % 16 == 0, <= 128 and block_size * head_dim <= 128 * 128; batch <= 2048.
The 310P prefill (vllm-ascend ``vllm_ascend/_310p/attention/``): an NZ-cast mask
(nd_to_nz_2d, acl_format 29) and tokens padded to a multiple of 16.
``build(soc)`` returns the ops for one SoC.
"""
from __future__ import annotations

import torch

from ..attn_math import attend_one, gather_paged
from ..checks import FLOAT16S, FLOATS, host_float, host_int, require, tensor
from ..graph_tape import vendor_op
from .formats import NZ, format_of, nz_cache_to_nd, nz_mask_to_nd

RC, PA, FA = "_npu_reshape_and_cache", "_npu_paged_attention", "_npu_flash_attention"
FAU = "_npu_flash_attention_unpad"


def _check_nz_cache(op, c, heads, head_dim):
    tensor(op, "cache", c, (torch.float16,), ndim=4)
    require(format_of(c) == NZ, op, "on the 310P the caches must be FRACTAL_NZ (empty_with_format(..., acl_format=29))")
    nb, g, bs, last = c.shape
    require(last == 16 and g * 16 == heads * head_dim, op,
            f"NZ cache must be (num_blocks, kv_heads*head_dim/16, block_size, 16), got {tuple(c.shape)}")
    require(bs % 16 == 0 and bs <= 128 and bs * head_dim <= 128 * 128, op,
            f"310P: block_size {bs} must be a multiple of 16, <= 128, and block_size * head_dim <= 16384")


def build(soc: str) -> dict:
    p310 = soc == "310P"

    @vendor_op(RC)
    def reshape_and_cache(key, value, key_cache, value_cache, slot_indices):
        """key/value [T, kvN, D] -> caches at int32 slots; negative slots skipped (dlinfer's graph
        padding); an empty slot tensor is an error (§11).  ND caches [nb, bs, kvN, D] (A2/A3), NZ on 310P."""
        tensor(RC, "key", key, FLOATS, ndim=3, contiguous=True)
        tensor(RC, "value", value, (key.dtype,), ndim=3, contiguous=True)
        tensor(RC, "slot_indices", slot_indices, (torch.int32,), ndim=1)
        T, h, d = key.shape
        require(slot_indices.shape[0] > 0, RC, "empty slot tensor (the ATB kernel fails on it)")
        require(slot_indices.shape[0] == T == value.shape[0], RC, "slot count differs from token count")
        s = slot_indices.long()
        ok = s >= 0
        if p310:
            for c in (key_cache, value_cache):
                _check_nz_cache(RC, c, h, d)
            nb, _, bs, _ = key_cache.shape
            require(bool((s < nb * bs).all()), RC, "slot beyond the cache")
            blk, off = s[ok] // bs, s[ok] % bs
            for x, c in ((key, key_cache), (value, value_cache)):
                c[blk, :, off, :] = x[ok].reshape(-1, h * d // 16, 16)
            return None
        for name, c in (("key_cache", key_cache), ("value_cache", value_cache)):
            tensor(RC, name, c, (key.dtype,), ndim=4)
            require(format_of(c) != NZ, RC, "NZ caches are the 310P layout")
        nb, bs, ch, cd = key_cache.shape
        require((h, d) == (ch, cd) and value.shape[1:] == value_cache.shape[2:], RC,
                f"key {tuple(key.shape)} does not fit cache {tuple(key_cache.shape)}")
        require(bool((s < nb * bs).all()), RC, "slot beyond the cache")
        for x, c in ((key, key_cache), (value, value_cache)):
            c.view(nb * bs, *c.shape[2:])[s[ok]] = x[ok]
        return None

    @vendor_op(PA)
    def paged_attention(query, key_cache, value_cache, num_kv_heads, num_heads, scale_value, block_table,
                        context_lens, out):
        """§3.3: decode; context_lens int32 [B] (a device tensor on 310P, vllm-ascend); in place."""
        tensor(PA, "query", query, FLOAT16S, ndim=3, contiguous=True)
        tensor(PA, "block_table", block_table, (torch.int32,), ndim=2)
        tensor(PA, "context_lens", context_lens, (torch.int32,), ndim=1)
        tensor(PA, "out", out, (query.dtype,), ndim=3)
        kvh, h = host_int(PA, "num_kv_heads", num_kv_heads), host_int(PA, "num_heads", num_heads)
        scale = host_float(PA, "scale_value", scale_value)
        B, n, d = query.shape
        require(n == h and h % kvh == 0 and 0 < d <= 256, PA, "head counts / head_size do not match")
        if p310:
            require(query.dtype == torch.float16 and 0 < B <= 2048 and d % 16 == 0, PA,
                    "310P: float16 only, 0 < batch <= 2048, head_size a multiple of 16")
            for c in (key_cache, value_cache):
                _check_nz_cache(PA, c, kvh, d)
            kc, vc = nz_cache_to_nd(key_cache, kvh), nz_cache_to_nd(value_cache, kvh)
        else:
            for name, t in (("key_cache", key_cache), ("value_cache", value_cache)):
                tensor(PA, name, t, (query.dtype,), ndim=4)
            kc, vc = key_cache, value_cache
            require(kc.shape[2] == kvh and kc.shape[3] == d, PA, "cache does not match the heads")
            bs = kc.shape[1]
            require(bs % 16 == 0 and bs <= 128, PA, f"block_size must be a multiple of 16 <= 128, got {bs}")
        bs = kc.shape[1]
        lens = context_lens.tolist()
        for b in range(B):
            k = gather_paged(kc, block_table[b], lens[b], bs, "NHD")
            v = gather_paged(vc, block_table[b], lens[b], bs, "NHD")
            out[b] = attend_one(query[b:b + 1], k, v, scale, causal=False)[0].to(out.dtype)

    @vendor_op(FA)
    def flash_attention(query, key, value, mask, seq_len, scale_value, num_heads, num_kv_heads, out):
        """§3.3: causal self-attention over packed sequences; seq_len a CPU int32 tensor; in place.
        310P: float16, tokens padded to a multiple of 16, mask NZ-cast (1, S/16, S, 16)."""
        tensor(FA, "query", query, FLOAT16S, ndim=3, contiguous=True)
        for name, t in (("key", key), ("value", value)):
            tensor(FA, name, t, (query.dtype,), ndim=3, contiguous=True)
        tensor(FA, "seq_len", seq_len, (torch.int32,), ndim=1)
        require(seq_len.device.type == "cpu", FA, "seq_len must be a host (CPU) tensor")
        tensor(FA, "out", out, (query.dtype,), ndim=3)
        lens = seq_len.tolist()
        T = query.shape[0]
        require(sum(lens) == T == key.shape[0], FA, f"seq_len sums to {sum(lens)}, tensors hold {T} tokens")
        if p310:
            require(query.dtype == torch.float16 and T % 16 == 0, FA,
                    f"310P: float16 only and tokens padded to a multiple of 16 (got {T})")
            tensor(FA, "mask", mask, (torch.float16,), ndim=4)
            require(format_of(mask) == NZ and mask.shape[0] == 1 and mask.shape[3] == 16, FA,
                    "310P: the mask must be NZ-cast (1, S/16, S, 16) float16 (acl_format 29)")
            nd = nz_mask_to_nd(mask)
        else:
            tensor(FA, "mask", mask, (query.dtype, torch.bool, torch.uint8, torch.int8), ndim=2)
            nd = mask
        S = max(lens)
        require(nd.shape[0] >= S and nd.shape[1] >= S, FA, f"mask {tuple(nd.shape)} smaller than {S}x{S}")
        want = torch.triu(torch.ones(S, S, dtype=torch.bool), 1)
        require(bool(((nd[:S, :S] != 0).cpu() == want).all()), FA, "mask must be causal (nonzero above the diagonal)")
        scale = host_float(FA, "scale_value", scale_value)
        host_int(FA, "num_heads", num_heads), host_int(FA, "num_kv_heads", num_kv_heads)
        s = 0
        for n in lens:
            out[s:s + n] = attend_one(query[s:s + n], key[s:s + n], value[s:s + n], scale, causal=True).to(out.dtype)
            s += n

    @vendor_op(FAU)
    def flash_attention_unpad(query, key, value, seq_len, scale_value, num_heads, num_kv_heads, out):
        """§3.3 (op-plugin SelfAttentionUnpadAtb.cpp: PA_ENCODER, no mask): bidirectional
        attention within each packed sequence (dlinfer's ViT path); seq_len a CPU int32 tensor
        of per-sequence lengths; in place into out."""
        tensor(FAU, "query", query, FLOAT16S, ndim=3, contiguous=True)
        for name, t in (("key", key), ("value", value)):
            tensor(FAU, name, t, (query.dtype,), ndim=3, contiguous=True)
        tensor(FAU, "seq_len", seq_len, (torch.int32,), ndim=1)
        require(seq_len.device.type == "cpu", FAU, "seq_len must be a host (CPU) tensor")
        tensor(FAU, "out", out, (query.dtype,), ndim=3)
        n_h, n_kv = host_int(FAU, "num_heads", num_heads), host_int(FAU, "num_kv_heads", num_kv_heads)
        require(query.shape[1] == n_h and key.shape[1] == n_kv and n_h % n_kv == 0, FAU,
                "num_heads / num_kv_heads do not match the tensors")
        lens = seq_len.tolist()
        T = query.shape[0]
        require(sum(lens) == T == key.shape[0] and min(lens) >= 0, FAU,
                f"seq_len sums to {sum(lens)}, tensors hold {T} tokens")
        scale = host_float(FAU, "scale_value", scale_value)
        s = 0
        for n in lens:
            if n:
                out[s:s + n] = attend_one(query[s:s + n], key[s:s + n], value[s:s + n], scale,
                                          causal=False).to(out.dtype)
            s += n

    return {RC: reshape_and_cache, PA: paged_attention, FA: flash_attention, FAU: flash_attention_unpad}
