"""torchrun's environment runs one engine per rank; start-up errors say what fits."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from halinfer import LLM, SamplingParams
from halinfer.engine.builder import check_parallel_devices
from halinfer.testing.tiny import save_tiny_model

from .test_tensor_parallel import KW, PROMPTS


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("tp_llama")), seed=5)


def test_torchrun_ranks_give_the_tokens_of_one_rank(llama, tmp_path):
    out = tmp_path / "tokens.json"
    script = os.path.join(os.path.dirname(__file__), "torchrun_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_SHOW_CPP_STACKTRACES": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        script, llama, str(out), json.dumps(PROMPTS)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"torchrun exited {r.returncode}\n--- stdout\n{r.stdout[-2000:]}\n--- stderr\n{r.stderr[-4000:]}"
    want = LLM(llama, **KW).generate(prompt_token_ids=PROMPTS, use_tqdm=False,
                                     sampling_params=SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    assert json.loads(out.read_text()) == [o.outputs[0].token_ids for o in want]


def test_heads_that_do_not_divide_are_refused_before_any_worker_starts(llama):
    with pytest.raises(ValueError, match=r"num_attention_heads \(4\) is not divisible by tensor_parallel_size=3; "
                                         r"sizes that fit: 1, 2, 4"):
        LLM(llama, tensor_parallel_size=3, **KW)


def test_expert_parallel_needs_experts(llama):
    with pytest.raises(ValueError, match="expert count"):
        LLM(llama, tensor_parallel_size=2, enable_expert_parallel=True, **KW)


class _Stub:
    name, device_type, dist_backend = "fakegpu", "cuda", "nccl"

    def device_count(self):
        return 2


def test_more_ranks_than_devices_names_the_count():
    with pytest.raises(ValueError, match=r"fakegpu has 2 device\(s\).*halinfer devices"):
        check_parallel_devices(_Stub(), None, 4, external=False)
    check_parallel_devices(_Stub(), None, 2, external=False)


def test_a_backend_without_a_collective_runs_one_rank_only():
    b = _Stub()
    b.dist_backend = ""
    with pytest.raises(ValueError, match="declares no collective"):
        check_parallel_devices(b, None, 2, external=False)
