"""``MacaOps``: the CUDA plugin's Triton operator table, with MetaX's own kernels where
dlinfer uses them on MACA (vendors/maca.md §2, §4).

From mcoplib / MetaX flash_attn:
  rms_norm          torch.ops._C.rms_norm / fused_add_rms_norm (the latter in place: fed copies)
  rotary            mcoplib.lmdeploy.lmdeploy_rotary_embedding (in place: fed copies)
  silu_and_mul      torch.ops._C.silu_and_mul
  store_kv          torch.ops._C_cache_ops.reshape_and_cache_flash (NHD model-dtype caches)
  paged_attention   decode: flash_attn.flash_attn_with_kvcache (paged, all lengths on the device)
  moe_route         torch.ops._moe_C.topk_softmax (schema probed: 4 or 5 arguments)
From the Triton kernels it shares with the CUDA plugin (halinfer/kernels/triton, imported here, lazily: this module
loads only when the backend's ops are first used), which MACA's Triton runs (§1: dlinfer runs
Triton attention and MoE kernels on MACA; warp size 64 is the compiler's business):
  paged_attention   prefill, mixed steps, and decode with sinks / chunked attention
  gelu_and_mul, and store_kv for MLA or HND caches
  fused_moe         tokens grouped by expert on the device (capturable)
Everything else (GEMMs through torch, quantized GEMMs, sampling): the core's torch code.
"""
from __future__ import annotations

import importlib
import weakref

import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.moe import ROUTE_CASES, route_case
from halinfer.kernels.triton.ops import TritonOps


HALF = (torch.float16, torch.bfloat16)


class _CosSinTables:
    """Per live cos_sin cache and dtype: the (max_pos, rot) cos and sin tables mcoplib reads."""

    def __init__(self):
        self._by_id: dict = {}

    def get(self, cache: torch.Tensor, dtype):
        key = (id(cache), dtype)
        hit = self._by_id.get(key)
        if hit is not None and hit[0]() is cache:
            return hit[1]
        half = cache.shape[-1] // 2
        c, s = cache[:, :half], cache[:, half:]
        # The kernel reads the first rot/2 entries of each row; full rows keep lmdeploy's shape.
        tables = (torch.cat((c, c), -1).to(dtype).contiguous(), torch.cat((s, s), -1).to(dtype).contiguous())
        self._by_id[key] = (weakref.ref(cache, lambda _r, k=key, d=self._by_id: d.pop(k, None)), tables)
        return tables


class MacaOps(TritonOps):
    # Calls MetaX's kernels do not take go to the shared Triton table (the parent class),
    # not to the reference; routing falls back to the reference, and what the shared table
    # declares (float32 vision attention) does too.  MetaX's silu_and_mul keeps the activation
    # in float32 before the product, which the shared fused act_and_mul_quant kernel does not
    # reproduce: that op composes this table's own activation and quantizer instead.
    fallbacks = {**TritonOps.fallbacks, "moe_route": ROUTE_CASES,
                 "act_and_mul_quant": TritonOps.fallbacks["act_and_mul_quant"] + ("vendor_activation",)}
    # MACA's Triton compiles for MetaX GPUs: no NVIDIA PTX in the shared attention kernels.
    inline_ptx = False

    def __init__(self):
        super().__init__()
        for name in ("mcoplib._C", "mcoplib._moe_C"):   # importing them registers torch.ops._C*, _moe_C
            importlib.import_module(name)
        self.fa = importlib.import_module("flash_attn")
        self.lmdeploy = importlib.import_module("mcoplib.lmdeploy")
        self.C, self.cache_ops, self.moe_C = torch.ops._C, torch.ops._C_cache_ops, torch.ops._moe_C
        # dlinfer calls topk_softmax with 4 arguments, open-source mcoplib declares a 5th (renormalize).
        self.topk_softmax_nargs = len(self.moe_C.topk_softmax.default._schema.arguments)
        self.tables = _CosSinTables()
        self._unit: dict = {}

    # -- normalisation ----------------------------------------------------------------------------
    def rms_norm(self, x, weight, eps, residual=None):
        if x.dtype not in HALF:
            return super().rms_norm(x, weight, eps, residual)
        if residual is None:
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
            self.C.rms_norm(out, x.contiguous(), weight, eps)
            return out
        y = x.clone(memory_format=torch.contiguous_format)          # becomes rmsnorm(x + residual) * w
        s = residual.clone(memory_format=torch.contiguous_format)   # becomes x + residual
        self.C.fused_add_rms_norm(y, s, weight, eps)
        return y, s
    rms_norm.__doc__ = Ops.rms_norm.__doc__

    # -- rotary --------------------------------------------------------------------------------------
    def rotary(self, q, k, positions, cos_sin_cache, is_neox=True):
        if q.dtype not in HALF:
            return super().rotary(q, k, positions, cos_sin_cache, is_neox)
        T, D = q.shape[0], q.shape[-1]
        cos, sin = self.tables.get(cos_sin_cache, q.dtype)
        qf = q.reshape(T, -1).clone(memory_format=torch.contiguous_format)
        kf = k.reshape(T, -1).clone(memory_format=torch.contiguous_format)
        self.lmdeploy.lmdeploy_rotary_embedding(positions.to(torch.int64), qf, kf, D, cos, sin, is_neox)
        return qf.view(q.shape), kf.view(k.shape)
    rotary.__doc__ = Ops.rotary.__doc__

    def silu_and_mul(self, x):
        if x.dtype not in HALF:
            return super().silu_and_mul(x)
        out = torch.empty(*x.shape[:-1], x.shape[-1] // 2, dtype=x.dtype, device=x.device)
        self.C.silu_and_mul(out, x.contiguous())
        return out

    # -- paged KV cache and attention ---------------------------------------------------------------------
    def _unit_scale(self, device):
        if device not in self._unit:
            self._unit[device] = torch.ones((), dtype=torch.float32, device=device)
        return self._unit[device]

    def store_kv(self, k, v, kv, slot_mapping):
        if v is None or kv.v is None or kv.quantized or kv.layout != "NHD" or k.dtype not in HALF:
            return super().store_kv(k, v, kv, slot_mapping)
        one = self._unit_scale(k.device)
        self.cache_ops.reshape_and_cache_flash(k, v, kv.k, kv.v, slot_mapping.to(torch.int64), "auto", one, one)
        return None
    store_kv.__doc__ = Ops.store_kv.__doc__

    def paged_attention(self, q, kv, meta, *, scale, causal=True, sliding_window=None, chunk_size=None,
                        soft_cap=None, alibi_slopes=None, sinks=None, v_head_dim=None, bidir_spans=None):
        decode = meta.is_decode and q.shape[0] == meta.num_seqs and bidir_spans is None
        if (decode and q.dtype in HALF and kv.v is not None and not kv.quantized and kv.layout == "NHD"
                and not chunk_size and sinks is None and q.shape[-1] == kv.v.shape[-1]):
            B, H, D = q.shape
            out = self.fa.flash_attn_with_kvcache(
                q.unsqueeze(1), kv.k, kv.v, cache_seqlens=meta.seq_lens, block_table=meta.block_tables,
                softmax_scale=scale, causal=True, window_size=((sliding_window - 1) if sliding_window else -1, -1),
                softcap=float(soft_cap or 0.0), alibi_slopes=None if alibi_slopes is None else alibi_slopes.float())
            return out.view(B, H, D)
        return super().paged_attention(q, kv, meta, scale=scale, causal=causal, sliding_window=sliding_window,
                                       chunk_size=chunk_size, soft_cap=soft_cap, alibi_slopes=alibi_slopes,
                                       sinks=sinks, v_head_dim=v_head_dim, bidir_spans=bidir_spans)
    paged_attention.__doc__ = Ops.paged_attention.__doc__

    # -- routing ------------------------------------------------------------------------------------------
    def moe_route(self, logits, top_k, *, scoring="softmax", renormalize=True, num_groups=None, topk_groups=None,
                  correction_bias=None, routed_scaling=1.0):
        case = route_case(scoring, num_groups, topk_groups, correction_bias)
        if case:
            return self.reference("moe_route", case, logits, top_k, scoring=scoring, renormalize=renormalize,
                                  num_groups=num_groups, topk_groups=topk_groups, correction_bias=correction_bias,
                                  routed_scaling=routed_scaling)
        T = logits.shape[0]
        w = torch.empty(T, top_k, dtype=torch.float32, device=logits.device)
        ids = torch.empty(T, top_k, dtype=torch.int32, device=logits.device)
        src = torch.empty(T, top_k, dtype=torch.int32, device=logits.device)
        args = [w, ids, src, logits.float().contiguous()]
        if self.topk_softmax_nargs >= 5:
            args.append(False)        # renormalised below, as dlinfer does
        self.moe_C.topk_softmax(*args)
        if renormalize:
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-20)
        return w * routed_scaling, ids
    moe_route.__doc__ = Ops.moe_route.__doc__
