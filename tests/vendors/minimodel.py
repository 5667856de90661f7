"""A two-layer attention stack written against ``Ops``, and a decode driver.

Small enough to run many steps quickly on emulated vendor ops, and built only
from the calls a real model makes (rms_norm with residual, linear, rotary,
store_kv, paged_attention, silu_and_mul), so a backend's graph path can be
compared with its eager path step by step, through core/graph.py's
CapturedDecodeRunner exactly as the engine drives it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from halinfer.core.attention import LayerKV, StepInputs
from halinfer.core.graph import CapturedDecodeRunner, EagerRunner
from halinfer.core.ops.quant import awq_pack


class MiniModel:
    def __init__(self, backend, *, heads=4, kv_heads=2, head_dim=64, layers=2, hidden=None, num_blocks=24,
                 block_size=None, dtype=torch.float16, seed=0, mlp="dense"):
        g = torch.Generator().manual_seed(seed)
        # mlp: one kind for every layer, or a tuple of kinds, one per layer (then it sets the depth)
        self.mlps = (mlp,) * layers if isinstance(mlp, str) else tuple(mlp)
        layers = len(self.mlps)
        self.ops = backend.ops
        self.backend = backend
        self.dev = backend.torch_device(None)
        self.dtype = dtype
        self.h, self.hk, self.d = heads, kv_heads, head_dim
        self.hidden = hidden or heads * head_dim
        self.bs = block_size or backend.default_block_size
        H = self.hidden

        def w(*shape, s=1.0):
            return (torch.randn(*shape, generator=g) * s / math.sqrt(shape[-1])).to(self.dev, dtype)

        self.layers = []
        for _ in range(layers):
            shape = backend.kv_cache_shape(num_blocks, self.bs, kv_heads, head_dim)
            # the backend allocates (the 300I Duo's caches are NZ-format tensors)
            kv = LayerKV(backend.allocate_kv_cache(shape, dtype, self.dev).zero_(),
                         backend.allocate_kv_cache(shape, dtype, self.dev).zero_(), backend.kv_layout)
            self.layers.append(dict(norm=(1 + 0.1 * torch.randn(H, generator=g)).to(self.dev, dtype),
                                    qkv=w((heads + 2 * kv_heads) * head_dim, H), o=w(H, heads * head_dim),
                                    up=w(2 * H, H), down=w(H, H), kv=kv))
        inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).double() / head_dim))
        ang = torch.arange(4096).double()[:, None] * inv[None, :]
        self.cos_sin = torch.cat((ang.cos(), ang.sin()), -1).float().to(self.dev)
        self.embed = w(1000, H, s=math.sqrt(H))
        # drawn last, so the dense weights are the same whatever the MLP kinds
        self.extra = {kind: _mlp_weights(kind, H, g, self.dev, dtype) for kind in dict.fromkeys(self.mlps)}

    def __call__(self, ids, positions, meta):
        x = self.embed.index_select(0, ids)
        res = None
        T = x.shape[0]
        for L, kind in zip(self.layers, self.mlps):
            if res is None:
                h, res = self.ops.rms_norm(x, L["norm"], 1e-5), x
            else:
                h, res = self.ops.rms_norm(x, L["norm"], 1e-5, res)
            qkv = self.ops.linear(h, L["qkv"])
            q, k, v = qkv.split([self.h * self.d, self.hk * self.d, self.hk * self.d], -1)
            q, k = self.ops.rotary(q.view(T, self.h, self.d), k.view(T, self.hk, self.d), positions, self.cos_sin)
            v = v.view(T, self.hk, self.d)
            self.ops.store_kv(k, v, L["kv"], meta.slot_mapping)
            a = self.ops.paged_attention(q, L["kv"], meta, scale=1.0 / math.sqrt(self.d))
            x = self.ops.linear(a.reshape(T, -1), L["o"])
            h, res = self.ops.rms_norm(x, L["norm"], 1e-5, res)
            x = self._mlp(h, L, kind)
        return x + res

    def _mlp(self, h, L, kind):
        o, e = self.ops, self.extra[kind]
        if kind == "moe":
            w, ids = o.moe_route(o.linear(h, e["router"]), 2)
            return o.fused_moe(h, e["w13"], e["w2"], w, ids)
        if kind == "w8a8":
            return o.w8a8_linear(o.silu_and_mul(o.w8a8_linear(h, *e["up"])), *e["down"])
        if kind == "w4a16":
            return o.w4a16_linear(o.silu_and_mul(o.w4a16_linear(h, *e["up"], 32)), *e["down"], 32)
        return o.linear(o.silu_and_mul(o.linear(h, L["up"])), L["down"])

    def reset_cache(self):
        for L in self.layers:
            L["kv"].k.zero_()
            L["kv"].v.zero_()


def _mlp_weights(mlp, H, g, dev, dtype):
    """MoE (4 experts, top 2), W8A8 (int8 [N, K] + per-channel scale) or W4A16 (AWQ, group 32) MLP weights."""
    def rnd(*shape):
        return torch.randn(*shape, generator=g) / math.sqrt(shape[-1])

    if mlp == "moe":
        return dict(router=rnd(4, H).to(dev, dtype), w13=rnd(4, 2 * H, H).to(dev, dtype), w2=rnd(4, H, H).to(dev, dtype))
    if mlp == "w8a8":
        def q8(n, k):
            w = rnd(n, k)
            s = w.abs().amax(1) / 127
            return (w / s[:, None]).round().to(torch.int8).to(dev), s.to(dev)
        return dict(up=q8(2 * H, H), down=q8(H, H))
    if mlp == "w4a16":
        def q4(k, n):
            vals = torch.randint(0, 16, (k, n), generator=g)
            zeros = torch.randint(4, 12, (k // 32, n), generator=g)
            scales = (torch.rand(k // 32, n, generator=g) * 0.02 + 0.01).to(dev, dtype)
            return awq_pack(vals).to(dev), scales, awq_pack(zeros).to(dev)
        return dict(up=q4(H, 2 * H), down=q4(H, H))
    return {}


class Driver:
    """Sequences of given prompt lengths: one prefill step, then decode steps (one new token each)."""

    def __init__(self, model: MiniModel, prompt_lens, max_blocks=6):
        self.m = model
        self.bs = model.bs
        self.max_blocks = max_blocks
        self.lens = [0] * len(prompt_lens)
        self.prompt_lens = list(prompt_lens)
        # Sequence i owns blocks 1 + i*max_blocks ... (block 0 stays unused, as graph padding reads it).
        self.tables = np.array([[1 + i * max_blocks + j for j in range(max_blocks)]
                                for i in range(len(prompt_lens))], dtype=np.int32)
        self.rng = np.random.default_rng(0)

    def step(self, new_tokens) -> tuple[torch.Tensor, torch.Tensor, StepInputs]:
        q_lens = np.asarray(new_tokens, dtype=np.int32)
        starts = np.asarray(self.lens, dtype=np.int64)
        seq_lens = (starts + q_lens).astype(np.int32)
        B = len(q_lens)
        pos = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, q_lens)])
        rows = np.repeat(np.arange(B), q_lens)
        slots = self.tables[rows, pos // self.bs].astype(np.int64) * self.bs + pos % self.bs
        self.lens = seq_lens.tolist()
        ids = torch.from_numpy(self.rng.integers(0, 1000, size=len(pos))).to(self.m.dev)
        return ids, torch.from_numpy(pos).to(self.m.dev), StepInputs(q_lens, seq_lens, self.tables.copy(), slots,
                                                                      self.bs)


def run(backend, model: MiniModel, runner_kind: str, prompt_lens=(5, 17, 9), decode_steps=4, sizes=(1, 2, 4, 8)):
    """Hidden states of every step (prefill, then decode_steps decode steps), on the CPU as float32."""
    model.reset_cache()
    drv = Driver(model, prompt_lens)
    builder = backend.metadata_builder(model.dev, model.bs)
    if runner_kind == "eager":
        runner = EagerRunner(model)
    else:
        runner = CapturedDecodeRunner(model, backend.graph_api(model.dev), backend.runtime(model.dev), list(sizes), drv.max_blocks, model.bs,
                                      drv.max_blocks * model.bs)
        with torch.inference_mode():
            runner.capture(builder=builder)
        model.reset_cache()
    outs = []
    with torch.inference_mode():
        for i in range(decode_steps + 1):
            ids, pos, step = drv.step(drv.prompt_lens if i == 0 else [1] * len(prompt_lens))
            if i > 0 and runner_kind != "eager":
                assert runner.can_replay(step)
            outs.append(runner.run(ids, pos, step, builder).float().cpu().clone())
    return outs, runner
