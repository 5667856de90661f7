"""The vendor plugins' tensor-parallel path under emulation: two ranks, the emulated vendor
library, and its collective ("hccl" for Ascend, "cncl" for Cambricon) registered with
torch.distributed as a gloo-backed stand-in (the real torch_npu / torch_mlu register theirs
the same way, through Backend.register_backend).  Eager and graph decode, with the all-reduce
inside the captured graph, give TP=1's tokens."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from halinfer import LLM, SamplingParams
from halinfer.core.mp_executor import _free_port

from .conftest import make_ascend, make_camb
from .emulation.install import UNTESTED_OK, installed, mlu_modules, npu_modules
from .emulation.mlu import MluConfig
from .emulation.npu import NpuConfig
from .test_models_emulated import registered

MODEL = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=64, intermediate_size=192)
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [9, 3, 11, 2, 8], [21, 22, 23]]
SP = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
KW = dict(dtype=torch.float16, num_kv_blocks=24, max_num_seqs=4, max_model_len=256)


def _vendor_backend(vendor: str):
    """(modules to install, the backend class, its collective's name) of an emulated vendor."""
    if vendor == "ascend":
        from halinfer.plugins.ascend.backend import AscendBackend

        return npu_modules(NpuConfig()), AscendBackend, "hccl"
    from halinfer.plugins.camb.backend import CambBackend

    return mlu_modules(MluConfig()), CambBackend, "cncl"


def register_gloo_standin(name: str) -> None:
    """torch.distributed backend ``name`` that is gloo underneath (what the vendor library provides)."""
    import torch.distributed as dist

    if name not in dist.Backend.backend_list:
        dist.Backend.register_backend(name, lambda store, rank, size, timeout: dist.ProcessGroupGloo(
            store, rank, size, timeout), devices=["cpu"])


def _rank_main(vendor: str, rank: int, model_dir: str, port: int, eager: bool, q) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    try:
        mods, cls, collective = _vendor_backend(vendor)
        with installed(mods, env=UNTESTED_OK):
            register_gloo_standin(collective)
            b = cls(device_type="cpu")
            assert b.available()[0] and b.dist_backend == collective
            with registered(b):
                llm = LLM(model_dir, device=b.name, tensor_parallel_size=2, enforce_eager=eager, **KW)
                out = [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=SP,
                                                                    use_tqdm=False)]
                q.put((rank, out, llm.engine.graphs))
    except BaseException as e:  # noqa: BLE001 - the parent reports it
        q.put((rank, f"{type(e).__name__}: {e}", None))


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    from halinfer.testing.tiny import save_tiny_model

    return save_tiny_model("qwen3", str(tmp_path_factory.mktemp("tp_qwen3")), seed=3, **MODEL)


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("vendor", ["ascend", "camb"])
def test_vendor_tp2_under_emulation_gives_the_tokens_of_one_rank(vendor, mode, qwen3, request):
    make = make_ascend if vendor == "ascend" else make_camb
    b = make(request.getfixturevalue("npu_emulation" if vendor == "ascend" else "mlu_emulation"))
    with registered(b):
        want = [o.outputs[0].token_ids for o in LLM(qwen3, device=b.name, enforce_eager=True, **KW).generate(
            prompt_token_ids=PROMPTS, sampling_params=SP, use_tqdm=False)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(vendor, r, qwen3, port, mode == "eager", q)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = dict((r, (out, graphs)) for r, out, graphs in (q.get(timeout=400) for _ in procs))
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    for r in range(2):
        out, graphs = got[r]
        assert not isinstance(out, str), f"rank {r}: {out}"
        assert out == want
        assert graphs == (mode == "graph")
