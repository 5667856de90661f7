"""Emulated Ascend FIA: npu_fused_infer_attention_score, its .out variant and the
max-workspace query (the ATB attention ops are in atb.py).

Semantics and argument rules: vendors/ascend.md §3.1 (FIA), §10
(.out + workspace under graph capture), checked against op-plugin's
torch_npu-npu_fused_infer_attention_score.md (PageAttention and TND sections).
Only what the docs state is accepted; features no plugin uses (pse, prefix,
quantization, rope inputs, left padding) are rejected as not emulated.
"""
from __future__ import annotations

import torch

from ..attn_math import attend_one, gather_paged
from ..checks import FLOAT16S, VendorArgError, host_float, host_int, host_ints, require, tensor
from ..graph_tape import vendor_op

FIA = "npu_fused_infer_attention_score"
MASK = 2048
_HANDLED = {"atten_mask", "actual_seq_lengths", "actual_seq_lengths_kv", "block_table", "num_heads", "scale",
            "pre_tokens", "next_tokens", "input_layout", "num_key_value_heads", "sparse_mode", "inner_precise",
            "block_size", "softmax_lse_flag"}


def _check_mask(mask):
    """sparse_mode 2/3/4 take exactly the 2048x2048 upper-triangular (1 = masked) mask."""
    tensor(FIA, "atten_mask", mask, (torch.bool, torch.int8, torch.uint8))
    m = mask.reshape(mask.shape[-2], mask.shape[-1]) if mask.dim() > 2 and mask.shape[:-2].numel() == 1 else mask
    require(tuple(m.shape) == (MASK, MASK), FIA, f"sparse_mode 3 needs a {MASK}x{MASK} mask, got {tuple(mask.shape)}")
    want = torch.triu(torch.ones(MASK, MASK, dtype=torch.bool, device=m.device), 1)
    require(bool(((m != 0) == want).all()), FIA, "atten_mask must be the upper-triangular compressed causal mask")


def _fia(query, key, value, kw):
    """(attention_out, softmax_lse) for paged FIA in the TND or BSND layout."""
    unknown = {k: v for k, v in kw.items() if k not in _HANDLED and v is not None}
    require(not unknown, FIA, f"arguments not emulated: {sorted(unknown)}")
    tensor(FIA, "query", query, FLOAT16S, contiguous=True)
    for name, t in (("key", key), ("value", value)):
        tensor(FIA, name, t, (query.dtype,), ndim=3, contiguous=True)
    require(key.shape == value.shape, FIA, "key and value must have identical shapes")
    table = kw.get("block_table")
    require(table is not None, FIA, "emulation covers PageAttention (block_table given) only")
    tensor(FIA, "block_table", table, (torch.int32,), ndim=2)
    heads = host_int(FIA, "num_heads", kw.get("num_heads", 1))
    kv_heads = host_int(FIA, "num_key_value_heads", kw.get("num_key_value_heads", 0)) or heads
    scale = host_float(FIA, "scale", kw.get("scale", 1.0))
    bs = host_int(FIA, "block_size", kw.get("block_size", 0))
    nb, kbs, hidden = key.shape
    require(bs == kbs, FIA, f"block_size {bs} != the cache's block dimension {kbs} (BnBsH)")
    require(heads % kv_heads == 0 and heads // kv_heads <= 64 and heads <= 256, FIA,
            f"num_heads {heads} / num_key_value_heads {kv_heads}: GQA ratio must divide and be <= 64, N <= 256")
    require(hidden % kv_heads == 0, FIA, "cache hidden size not divisible by num_key_value_heads")
    d = hidden // kv_heads
    sparse = host_int(FIA, "sparse_mode", kw.get("sparse_mode", 0))
    require(sparse in (0, 3), FIA, f"emulation covers sparse_mode 0 and 3, got {sparse}")
    if sparse == 3:
        _check_mask(kw.get("atten_mask"))
    else:
        require(kw.get("atten_mask") is None, FIA, "emulation covers sparse_mode 0 without a mask only")
    layout = kw.get("input_layout", "BSH")
    kv_lens_raw = kw.get("actual_seq_lengths_kv")
    require(kv_lens_raw is not None, FIA, "PageAttention requires actual_seq_lengths_kv")
    kc, vc = key.view(nb, bs, kv_heads, d), value.view(nb, bs, kv_heads, d)

    if layout == "TND":
        T, n, qd = query.shape
        require(kw.get("actual_seq_lengths") is not None, FIA, "TND requires actual_seq_lengths")
        cum = host_ints(FIA, "actual_seq_lengths", kw["actual_seq_lengths"])
        B = len(cum)
        require(0 < B <= 4096, FIA, f"TND batch (len(actual_seq_lengths)) must be 1..4096, got {B}")
        require(all(b >= a for a, b in zip([0] + cum, cum)) and cum[-1] == T, FIA,
                f"TND actual_seq_lengths must be cumulative query ends ending at T={T}, got {cum}")
        require(qd == d == 128, FIA, f"TND without rope inputs needs head dim 128 (query {qd}, cache {d})")
        require(bs % 16 == 0 and bs <= 1024, FIA, f"TND PageAttention block_size must be a multiple of 16 <= 1024")
        kv_lens = host_ints(FIA, "actual_seq_lengths_kv", kv_lens_raw)
        require(len(kv_lens) >= B, FIA, f"actual_seq_lengths_kv has {len(kv_lens)} entries for batch {B}")
        q_lens = [b - a for a, b in zip([0] + cum[:-1], cum)]
        starts = [b - q for b, q in zip(cum, q_lens)]
        out = torch.empty(T, n, d, dtype=query.dtype, device=query.device)
        rows = [(query[s:s + q], s, q) for s, q in zip(starts, q_lens)]
    elif layout == "BSND":
        B, S, n, qd = query.shape
        require(qd == d and qd % 16 == 0, FIA, f"BSND head dim {qd} must equal the cache's ({d}) and be 16-aligned")
        if S == 1:
            require(0 < bs <= 512, FIA, f"PageAttention with Q_S=1: block_size must be non-zero and <= 512")
        else:
            require(bs % 128 == 0 and 128 <= bs <= 512, FIA,
                    f"PageAttention with Q_S>1: block_size must be a multiple of 128 in [128, 512], got {bs}")
        q_lens = [S] * B
        if S > 1 and kw.get("actual_seq_lengths") is not None:
            q_lens = _per_batch(host_ints(FIA, "actual_seq_lengths", kw["actual_seq_lengths"]), B, "actual_seq_lengths")
            require(all(0 <= x <= S for x in q_lens), FIA, f"actual_seq_lengths must be <= Q_S={S}")
        kv_lens = _per_batch(host_ints(FIA, "actual_seq_lengths_kv", kv_lens_raw), B, "actual_seq_lengths_kv")
        out = torch.full((B, S, n, d), float("nan"), dtype=query.dtype, device=query.device)  # padding rows: garbage
        rows = [(query[b, :q_lens[b]], b, q_lens[b]) for b in range(B)]
    else:
        raise VendorArgError(f"{FIA}: emulation covers input_layout TND and BSND, got {layout!r}")

    require(n == heads, FIA, f"query has {n} heads, num_heads={heads}")
    require(table.shape[0] == B, FIA, f"block_table rows {table.shape[0]} != batch {B}")
    causal = sparse == 3
    for b, (qb, where, qn) in enumerate(rows):
        n_kv = kv_lens[b]
        require(qn <= n_kv or not causal, FIA, f"batch {b}: {qn} queries over {n_kv} keys with sparse_mode 3")
        need = -(-n_kv // bs)
        require(need <= table.shape[1], FIA, f"batch {b}: {n_kv} keys need {need} blocks, table has {table.shape[1]}")
        used = table[b, :need]
        require(bool(((used >= 0) & (used < nb)).all()), FIA, f"batch {b}: block id out of range")
        if qn == 0:
            continue
        k = gather_paged(kc, table[b], n_kv, bs, "NHD")
        v = gather_paged(vc, table[b], n_kv, bs, "NHD")
        o = attend_one(qb, k, v, scale, causal=causal and qn > 1).to(query.dtype)
        if layout == "TND":
            out[where:where + qn] = o
        else:
            out[where, :qn] = o
    lse = torch.zeros(1, dtype=torch.float32, device=query.device)
    return out, lse


def _per_batch(v, B, name):
    """SymInt[] of length 1 (broadcast) or >= B (first B used), as the docs state."""
    if len(v) == 1:
        return v * B
    require(len(v) >= B, FIA, f"{name} has {len(v)} entries for batch {B}")
    return v[:B]


@vendor_op(FIA)
def fia_default(query, key, value, **kw):
    """§3.1: returns (attention_out, softmax_lse)."""
    return _fia(query, key, value, kw)


@vendor_op(FIA + ".out")
def fia_out(query, key, value, *, workspace=None, attention_out, softmax_lse, **kw):
    """§10: the .out variant used under graph capture: writes into attention_out / softmax_lse
    (callers pass out=[attn, lse], which torch maps onto those two)."""
    tensor(FIA + ".out", "workspace", workspace, (torch.uint8,))
    o, lse = _fia(query, key, value, kw)
    require(tuple(attention_out.shape) == tuple(o.shape) and attention_out.dtype == o.dtype, FIA + ".out",
            f"attention_out must be {tuple(o.shape)} {o.dtype}, got {tuple(attention_out.shape)} {attention_out.dtype}")
    attention_out.copy_(o)
    softmax_lse.reshape(-1)[:1].copy_(lse.to(softmax_lse.dtype))
    return attention_out, softmax_lse


@vendor_op("_npu_fused_infer_attention_score_get_max_workspace")
def fia_max_workspace(query, key, value, **kw):
    """§10: a workspace large enough for any lengths (validated like the op itself)."""
    _fia(query, key, value, kw)
    return torch.empty(4096, dtype=torch.uint8, device=query.device)
