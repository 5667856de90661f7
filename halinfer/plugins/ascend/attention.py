"""Paged attention on Ascend: FIA on A2/A3, ATB on the 300I Duo (310P).

FIA, ``npu_fused_infer_attention_score`` (vendors/ascend.md §3.1), over the KV
cache viewed as (num_blocks, block_size, kv_heads * head_dim) with a block table:
- head_dim 128: the TND layout dlinfer and vllm-ascend use; query (T, N, D),
  ``actual_seq_lengths`` = cumulative query ends, ``actual_seq_lengths_kv`` =
  per-sequence KV lengths.  (FIA's docs allow TND without rope inputs only for
  D = 128, or 192.)
- other head dims: BSND; decode as (B, 1, N, D), prefill with the queries
  scattered into a (B, max_q, N, D) batch and gathered back.
Causal steps with more than one query token use ``sparse_mode=3`` (bottom-right
causal) with the 2048x2048 upper-triangular mask it requires; decode and
non-causal steps use ``sparse_mode=0`` without a mask.

ATB (§3.3) on the 300I Duo, over NZ caches (nz.py): see AtbAttention.

``__call__`` returns the case name (a str) for a step its op cannot take;
AscendOps declares those cases and runs the core reference for them.
"""
from __future__ import annotations

import torch

from . import nz
from .graph import CaptureState, UpdateRecord

MASK_SIZE = 2048   # sparse_mode 2/3/4 take exactly this compressed mask (§3.1)
MASK_ALIGN = 256   # 310P prefill masks are built for lengths rounded up to this


def _out_like(q, shape):
    return torch.empty(shape, dtype=q.dtype, device=q.device)


class FiaAttention:
    def __init__(self, torch_npu, state: CaptureState):
        self.npu = torch_npu
        self.state = state
        self._masks: dict = {}

    def _causal_mask(self, device):
        m = self._masks.get(device)
        if m is None:  # True = masked, strictly above the diagonal
            m = torch.triu(torch.ones(MASK_SIZE, MASK_SIZE, dtype=torch.bool, device=device), diagonal=1)
            self._masks[device] = m
        return m

    def __call__(self, q, kv, meta, scale: float, causal: bool):
        T, N, D = q.shape
        nb, bs, kvn, _ = kv.k.shape
        dv = kv.v.shape[-1]
        if D != dv:
            return "mixed_head_dims"
        if D % 16 or D > 512 or N > 256:
            return "head_shape"
        key, value = kv.k.view(nb, bs, kvn * D), kv.v.view(nb, bs, kvn * dv)
        kw = dict(block_table=meta.block_tables, num_heads=N, num_key_value_heads=kvn, scale=scale, block_size=bs)
        if causal and not meta.is_decode:
            kw.update(atten_mask=self._causal_mask(q.device), sparse_mode=3)
        else:
            kw.update(sparse_mode=0)
        if D == 128:
            kw["input_layout"] = "TND"
            host = {"actual_seq_lengths": "q_cum_host", "actual_seq_lengths_kv": "kv_lens_host"}
            return self._launch(q.contiguous(), key, value, kw, host, meta)
        kw["input_layout"] = "BSND"
        if meta.is_decode:
            out = self._launch(q.contiguous().view(T, 1, N, D), key, value, kw,
                               {"actual_seq_lengths_kv": "kv_lens_host"}, meta)
            return out.view(T, N, dv)
        B, S = meta.num_seqs, meta.max_q_len
        padded = q.new_zeros(B * S, N, D).index_copy_(0, meta.pad_index, q).view(B, S, N, D)
        out = self._launch(padded, key, value, kw,
                           {"actual_seq_lengths": "q_lens_host", "actual_seq_lengths_kv": "kv_lens_host"}, meta)
        return out.reshape(B * S, N, dv).index_select(0, meta.pad_index)

    def _launch(self, q, key, value, kw, host: dict[str, str], meta):
        for name, attr in host.items():
            kw[name] = getattr(meta, attr)
        if not self.state.active:
            return self.npu.npu_fused_infer_attention_score(q, key, value, **kw)[0]
        # Graph capture (§10): an own task group behind an ExternalEvent, the .out variant
        # with the maximal workspace, so graph.py can re-issue it with new lengths.
        npu = self.npu.npu
        stream = npu.current_stream()
        event = npu.ExternalEvent()
        event.wait(stream)
        event.reset(stream)
        ws = self.npu._npu_fused_infer_attention_score_get_max_workspace(q, key, value, **kw)
        out = _out_like(q, q.shape[:-1] + (value.shape[-1] // kw["num_key_value_heads"],))
        lse = _out_like(q, (1,))
        kw = dict(kw, workspace=ws, out=[out, lse])
        npu.graph_task_group_begin(stream)
        self.npu.npu_fused_infer_attention_score.out(q, key, value, **kw)
        handle = npu.graph_task_group_end(stream)
        self.state.records.append(UpdateRecord(handle, event, (q, key, value), kw, host))
        return out


class AtbAttention:
    """The 310P path (nz.py): NZ caches, decode through _npu_paged_attention (lengths from a
    device tensor: nothing to refresh in a graph), a prefill without cached history through
    _npu_flash_attention on the new tokens' keys and values (read back from the NZ rows
    store_kv just wrote), padded to a multiple of 16 tokens with an NZ-cast causal mask."""

    def __init__(self, torch_npu):
        self.npu = torch_npu
        self._masks: dict = {}

    def _mask(self, size, device):
        size = nz.round_up(size, MASK_ALIGN)   # one mask serves every shorter prefill
        key = (size, device)
        if key not in self._masks:
            self._masks[key] = nz.causal_mask(self.npu, size, device)
        return self._masks[key]

    def __call__(self, q, kv, meta, scale: float, causal: bool):
        T, N, D = q.shape
        kvn = kv.k.shape[1] * 16 // D
        if kvn * D != kv.k.shape[1] * 16 or kv.v.shape != kv.k.shape:
            return "mixed_head_dims"
        if D > 256 or D % 16:
            return "head_shape"
        out = _out_like(q, (T, N, D))
        if meta.is_decode:
            self.npu._npu_paged_attention(q.contiguous(), kv.k, kv.v, kvn, N, scale, meta.block_tables,
                                          meta.seq_lens, out)
            return out
        if meta.has_history or not causal:
            return "prefix_or_noncausal"   # no ATB op here attends over a cached prefix
        slots = meta.slot_mapping
        k, v = nz.rows(kv.k, slots, kvn), nz.rows(kv.v, slots, kvn)
        padded = nz.round_up(T, nz.TOKEN_ALIGN)
        # vllm-ascend forward_prefill_310: the padding rows join the last sequence (they come after
        # its tokens, so causal attention leaves the real rows unchanged)
        lens = list(meta.q_lens_host)
        lens[-1] += padded - T
        seq_len = torch.tensor(lens, dtype=torch.int32)   # host tensor: ATB reads it on the CPU
        o = _out_like(q, (padded, N, D))
        self.npu._npu_flash_attention(nz.pad_rows(q, padded), nz.pad_rows(k, padded), nz.pad_rows(v, padded),
                                      self._mask(max(lens), q.device), seq_len, scale, N, kvn, o)
        return o[:T]
