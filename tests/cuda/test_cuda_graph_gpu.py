"""On a GPU: decode steps replayed from captured CUDA graphs equal eager steps,
for batches smaller than their bucket and lengths that change every step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import GPU_OK, GPU_WHY
from halinfer.core.attention import LayerKV, StepInputs
from halinfer.core.graph import CapturedDecodeRunner
from tritonops_util import assert_close

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("int8", [False, True], ids=["kv_auto", "kv_int8"])
def test_decode_graph_replay_matches_eager(dtype, int8):
    from halinfer.plugins.cuda.backend import CudaBackend

    torch.manual_seed(0)
    dev = torch.device("cuda", 0)
    b = CudaBackend()
    ops = b.ops
    Hq, Hk, D, bs, max_len, vocab = 8, 2, 64, 16, 512, 1000
    max_blocks = max_len // bs
    num_blocks = 8 * max_blocks + 1
    kc = torch.randn(num_blocks, bs, Hk, D, device=dev).to(dtype)
    vc = torch.randn(num_blocks, bs, Hk, D, device=dev).to(dtype)
    ks = vs = None
    if int8:
        kc, vc = kc.to(torch.int8), vc.to(torch.int8)
        ks = torch.rand(num_blocks, bs, Hk, device=dev) * 0.05
        vs = torch.rand(num_blocks, bs, Hk, device=dev) * 0.05
    kv = LayerKV(kc, vc, "NHD", ks, vs)
    emb = torch.randn(vocab, (Hq + 2 * Hk) * D, device=dev).to(dtype)
    cos_sin = torch.randn(max_len, D, device=dev)
    w = torch.randn(Hq * D, device=dev).to(dtype)

    def model_fn(ids, pos, meta):
        x = emb[ids]
        q = x[:, : Hq * D].view(-1, Hq, D)
        k = x[:, Hq * D: (Hq + Hk) * D].view(-1, Hk, D)
        v = x[:, (Hq + Hk) * D:].view(-1, Hk, D)
        q, k = ops.rotary(q, k, pos, cos_sin)
        ops.store_kv(k, v, kv, meta.slot_mapping)
        o = ops.paged_attention(q, kv, meta, scale=D ** -0.5, sinks=None)
        return ops.rms_norm(o.reshape(len(ids), -1), w, 1e-6)

    runner = CapturedDecodeRunner(model_fn, b.graph_api(dev), b.runtime(dev), [1, 2, 4, 8], max_blocks, bs,
                                  max_len)
    builder = b.metadata_builder(dev, bs)
    with torch.inference_mode():
        runner.capture(builder=builder)
        assert runner.captured_sizes == (1, 2, 4, 8)
        rng = np.random.default_rng(0)
        for n in (1, 3, 8, 5, 2):
            seq_lens = rng.integers(1, max_len, size=n).astype(np.int32)
            tables = np.zeros((n, max_blocks), np.int32)
            for i in range(n):  # disjoint blocks per sequence, block 0 never used
                tables[i] = 1 + i * max_blocks + np.arange(max_blocks)
            pos = seq_lens - 1
            slots = tables[np.arange(n), pos // bs].astype(np.int64) * bs + pos % bs
            step = StepInputs(np.ones(n, np.int32), seq_lens, tables, slots, bs)
            assert runner.can_replay(step)
            ids = torch.from_numpy(rng.integers(0, vocab, size=n)).to(dev)
            pos_t = torch.from_numpy(pos.astype(np.int64)).to(dev)
            replayed = runner.run(ids, pos_t, step, builder).clone()
            eager = model_fn(ids, pos_t, builder.build(step))  # writes the same k/v again: idempotent
            assert_close(replayed, eager.float(), dtype, factor=2, what=f"batch {n}")
