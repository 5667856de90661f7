"""store_kv and paged_attention for the HND layout, written apart from the core
reference: attention walks each sequence's blocks with an online softmax (as a
paged kernel does), skips blocks a window or chunk cannot see, and takes lengths
only from the host-side metadata.  Every other op is the core reference."""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops


class HndOps(Ops):
    fallbacks = {"paged_attention": ("bidirectional",)}

    def store_kv(self, k, v, kv, slot_mapping):
        assert kv.layout == "HND", kv.layout
        keep = (slot_mapping >= 0).nonzero().flatten()
        slots = slot_mapping.index_select(0, keep).long()
        bs = kv.k.shape[2]
        blk, off = slots // bs, slots % bs
        for cache, scales, x in ((kv.k, kv.k_scale, k), (kv.v, kv.v_scale, v)):
            if cache is None or x is None:
                continue
            x = x.index_select(0, keep)
            if scales is not None:
                s = x.float().abs().amax(-1).clamp(min=1e-8) / 127.0          # [n, Hk]
                x = (x.float() / s[..., None]).round().clamp(-127, 127)
                scales.permute(0, 2, 1).index_put_((blk, off), s)             # writes through the view
            cache.permute(0, 2, 1, 3).index_put_((blk, off), x.to(cache.dtype))

    def paged_attention(self, q, kv, meta, *, scale, causal=True, sliding_window=None, chunk_size=None,
                        soft_cap=None, alibi_slopes=None, sinks=None, v_head_dim=None, bidir_spans=None):
        if bidir_spans is not None:   # the reference reads either layout
            return self.reference("paged_attention", "bidirectional", q, kv, meta, scale=scale, causal=causal,
                                  sliding_window=sliding_window, chunk_size=chunk_size, soft_cap=soft_cap,
                                  alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim,
                                  bidir_spans=bidir_spans)
        assert kv.layout == "HND", kv.layout
        seq_lens = [int(n) for n in meta.host_seq_lens]     # host int32: no device sync
        q_lens = meta.host_q_lens
        T, Hq, D = q.shape
        Hk, bs = kv.k.shape[1], kv.k.shape[2]
        G = Hq // Hk
        dv = kv.v.shape[-1] if kv.v is not None else (v_head_dim or kv.k.shape[-1])
        dev = q.device
        out = q.new_empty(T, Hq, dv)
        slopes = None if alibi_slopes is None else alibi_slopes.float().to(dev).view(Hk, G, 1, 1)
        start = 0
        for i, (n, m) in enumerate(zip(seq_lens, q_lens)):
            qi = q[start:start + m].float().reshape(m, Hk, G, D).permute(1, 2, 0, 3)      # [Hk, G, m, D]
            qpos = torch.arange(n - m, n, device=dev)
            if sinks is not None:   # the sink starts the running softmax: max = sink, sum = 1, no value
                run_max = sinks.float().to(dev).view(Hk, G, 1).expand(Hk, G, m).clone()
                run_sum = torch.ones(Hk, G, m, device=dev)
            else:
                run_max = torch.full((Hk, G, m), float("-inf"), device=dev)
                run_sum = torch.zeros(Hk, G, m, device=dev)
            acc = torch.zeros(Hk, G, m, dv, device=dev)
            for b in range(-(-n // bs)):
                lo, cnt = b * bs, min(bs, n - b * bs)
                if not self._block_visible(lo, lo + cnt - 1, n - m, causal, sliding_window, chunk_size, n):
                    continue
                blk = int(meta.block_tables[i, b])
                kb, vb = self._block(kv, blk, cnt, dv)
                s = torch.matmul(qi, kb[:, None].transpose(-1, -2)) * scale            # [Hk, G, m, cnt]
                if soft_cap:
                    s = soft_cap * torch.tanh(s / soft_cap)
                kpos = torch.arange(lo, lo + cnt, device=dev)
                rel = kpos[None, :] - qpos[:, None]                                     # [m, cnt] = j - p
                if slopes is not None:
                    s = s + slopes * rel
                ok = torch.ones_like(rel, dtype=torch.bool)
                if causal:
                    ok &= rel <= 0
                if sliding_window:
                    ok &= -rel < sliding_window
                if chunk_size:
                    ok &= torch.div(kpos[None, :], chunk_size, rounding_mode="floor") == \
                        torch.div(qpos[:, None], chunk_size, rounding_mode="floor")
                s = torch.where(ok, s, torch.full_like(s, float("-inf")))
                new_max = torch.maximum(run_max, s.amax(-1))
                base = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
                p = torch.exp(s - base[..., None])
                corr = torch.exp(run_max - base)
                run_sum = run_sum * corr + p.sum(-1)
                acc = acc * corr[..., None] + torch.matmul(p, vb[:, None])             # [Hk, G, m, dv]
                run_max = new_max
            o = acc / run_sum[..., None]
            out[start:start + m] = o.permute(2, 0, 1, 3).reshape(m, Hq, dv).to(q.dtype)
            start += m
        return out

    @staticmethod
    def _block_visible(k_lo, k_hi, first_q, causal, window, chunk, n):
        """Can any query at positions first_q..n-1 see a key in k_lo..k_hi?"""
        if causal and k_lo > n - 1:
            return False
        if window and k_hi < first_q - window + 1:
            return False
        if chunk and k_hi < (first_q // chunk) * chunk:
            return False
        return True

    @staticmethod
    def _block(kv, blk, cnt, dv):
        """One block's first cnt keys and values, float32 [Hk, cnt, D] / [Hk, cnt, Dv]."""
        k = kv.k[blk, :, :cnt].float()
        if kv.k_scale is not None:
            k = k * kv.k_scale[blk, :, :cnt, None]
        if kv.v is None:
            return k, k[..., :dv]
        v = kv.v[blk, :, :cnt].float()
        if kv.v_scale is not None:
            v = v * kv.v_scale[blk, :, :cnt, None]
        return k, v
