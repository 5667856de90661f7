"""Run by torchrun in test_launch_and_errors: one engine per rank, rank 0 writes its tokens."""
import faulthandler
import json
import sys

# An intermittent abort of rank 1 on the CI machine ("terminate called without an active exception",
# no traceback): every thread's Python stack goes to stderr if the process dies on a signal.
faulthandler.enable(all_threads=True)

from halinfer import LLM, SamplingParams

if __name__ == "__main__":
    model, out, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    llm = LLM(model, device="cpu", dtype="float32", block_size=4, num_kv_blocks=96, max_model_len=128,
              tensor_parallel_size=2)
    res = llm.generate(prompt_token_ids=prompts, use_tqdm=False,
                       sampling_params=SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    import torch.distributed as dist

    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump([o.outputs[0].token_ids for o in res], f)
    llm.shutdown()
