"""`halinfer demo`: the built-in default job, needing no download.

Builds a small Llama-shaped model with random weights and a byte-level BPE
tokenizer into a cache folder (once), generates greedily for a few prompts on
the best available device, checks every token against HF transformers (float32,
on the CPU), and reports the text, tokens/s, the device and whether it matched.
"""
from __future__ import annotations

import os
import time

DEMO_SHAPE = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024)
PROMPTS = ["Hello, world!", "The quick brown fox", "Tell me a story about a robot", "What is the capital of France?"]


def demo_model(cache_dir: str) -> str:
    path = os.path.join(cache_dir, "demo-llama-v1")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        from .testing.tiny import save_tiny_model

        print(f"building the demo model in {path} ...", flush=True)
        save_tiny_model("llama", path, seed=0, **DEMO_SHAPE)
    return path


def run_demo(device: str = "auto", cache_dir: str = "~/.cache/halinfer", max_tokens: int = 48) -> int:
    from .core.sampling import SamplingParams
    from .llm import LLM
    from .testing.hf_compare import hf_greedy, hf_model

    path = demo_model(os.path.expanduser(cache_dir))
    llm = LLM(path, device=device, dtype="float32", max_model_len=512)
    sp = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(PROMPTS, sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    n_tok = sum(len(o.outputs[0].token_ids) for o in outs)

    ref = hf_model(path)
    matched = all(hf_greedy(ref, o.prompt_token_ids, max_tokens).tokens == o.outputs[0].token_ids for o in outs)
    backend = llm.engine.backend
    for o in outs:
        print(f"> {o.prompt}\n  {o.outputs[0].text!r}")
    print(f"device: {llm.device} ({backend.name} backend{', graphs' if llm.engine.graphs else ''})")
    print(f"throughput: {n_tok} tokens in {dt:.2f}s = {n_tok / dt:.1f} tokens/s "
          f"({len(PROMPTS)} prompts batched, random weights)")
    print(f"matches HF transformers token for token: {'yes' if matched else 'NO'}")
    return 0 if matched else 1
