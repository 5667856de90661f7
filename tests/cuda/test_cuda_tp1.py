"""What one GPU can check of the tensor-parallel path while several-GPU machines are withheld:
the multi-process executor driving a CUDA worker with decode graphs gives the in-process
engine's tokens, and an NCCL group of one rank all-reduces inside a captured CUDA graph, as
TP=2 decode graphs do (tests/parallel/test_tp_graphs_gpu.py, which needs two GPUs).  A one-rank
sum is the identity, so the captured collective is a pre-multiplied sum (NCCL's PREMUL_SUM, x
times a factor at one rank): a capture that dropped it would give a different result."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from halinfer import LLM, SamplingParams
from halinfer.testing.tiny import save_tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

KW = dict(device="cuda", dtype="float32", num_kv_blocks=256, max_model_len=256, max_num_seqs=8)


def _tokens(llm, prompts, sp):
    return [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=sp,
                                                         use_tqdm=False)]


def test_mp_executor_with_graphs_gives_the_in_process_eager_tokens(tmp_path):
    path = save_tiny_model("llama", str(tmp_path / "llama"), seed=7, num_key_value_heads=2)
    sp = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    prompts = [[5, 6, 7, 8, 9], [9, 3, 11, 2, 8, 1, 4], [21, 22], list(range(3, 40))]
    one = LLM(path, enforce_eager=True, **KW)
    try:
        want = _tokens(one, prompts, sp)
    finally:
        one.shutdown()
    llm = LLM(path, executor="mp", **KW)
    try:
        assert llm.engine.graphs, "the worker process captured no decode graphs"
        assert _tokens(llm, prompts, sp) == want
    finally:
        llm.shutdown()


# In a process of its own: a default process group in pytest's would outlive the test.
_NCCL_ONE_RANK = textwrap.dedent("""
    import socket, torch, torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, device_id=dev)
    x = torch.randn(37, 129, device=dev)
    eager = x.clone(); dist.all_reduce(eager)
    assert torch.equal(eager, x), "a one-rank sum changed its input"
    triple = dist._make_nccl_premul_sum(3.0)
    buf = x.clone()
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        dist.all_reduce(buf, op=triple)   # warm-up outside the capture (NCCL's lazy setup)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(buf, x * 3.0), "eager PREMUL_SUM"
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        buf.mul_(2.0)
        dist.all_reduce(buf, op=triple)
        buf.add_(1.0)
    for i in range(3):
        y = x + i
        buf.copy_(y); g.replay()
        torch.cuda.synchronize()
        assert torch.equal(buf, y * 2.0 * 3.0 + 1.0), (i, (buf - (y * 6.0 + 1.0)).abs().max().item())
    print("nccl", ".".join(map(str, torch.cuda.nccl.version())))
    dist.destroy_process_group()
""")


def test_nccl_one_rank_all_reduce_inside_a_captured_graph():
    r = subprocess.run([sys.executable, "-c", _NCCL_ONE_RANK], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.strip().startswith("nccl ")
