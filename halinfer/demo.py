"""`halinfer demo`: SmolLM2-135M-Instruct (the default model) on a few chat prompts.

Streams each reply on the best available device, reports tokens/s, then checks the
greedy tokens against HF transformers loading the same GGUF file (float32, CPU).
The model is float32 here too, so the check is exact token equality.
"""
from __future__ import annotations

import sys
import time

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "Explain in two sentences why the sky is blue."]


def run_demo(device: str = "auto", max_tokens: int = 64, check: bool = True) -> int:
    from .core.sampling import SamplingParams
    from .default_model import DefaultModelMissing, default_model_path
    from .llm import LLM

    try:
        path = default_model_path()
    except DefaultModelMissing as e:
        print(f"halinfer demo: {e}", file=sys.stderr)
        return 1
    print(f"model: {path}", flush=True)
    # A small context and KV cache: the reference CPU backend slows with a large cache.
    llm = LLM(path, device=device, dtype="float32", max_model_len=1024, num_kv_blocks=256)
    sp = SamplingParams(temperature=0, max_tokens=max_tokens)
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    streamed_tokens, streamed_s = 0, 0.0
    for conv in convs:
        print(f"\n> {conv[0]['content']}\n", end="", flush=True)
        prompt = llm.apply_chat_template(conv)
        t0 = time.perf_counter()
        text = ""
        for delta in llm.stream(prompt, sp, prompt_token_ids=llm.engine.encode(prompt)):
            text += delta
            print(delta, end="", flush=True)
        streamed_s += time.perf_counter() - t0
        print()
    t0 = time.perf_counter()
    outs = llm.chat(convs, sp)
    dt = time.perf_counter() - t0
    n_tok = sum(len(o.outputs[0].token_ids) for o in outs)
    streamed_tokens = n_tok  # greedy: the streamed replies are these same tokens
    backend = llm.engine.backend
    print(f"\ndevice: {llm.device} ({backend.name} backend{', graphs' if llm.engine.graphs else ''}), float32")
    print(f"streaming, one prompt at a time: {streamed_tokens / streamed_s:.1f} tokens/s")
    print(f"batched ({len(convs)} prompts): {n_tok} tokens in {dt:.2f}s = {n_tok / dt:.1f} tokens/s")
    if not check:
        return 0
    try:
        import accelerate  # noqa: F401 - transformers' GGUF loading needs it
        from .testing.hf_gguf import hf_gguf_model, hf_greedy_tokens
    except ImportError:
        print(f"transformers check skipped: it needs accelerate (pip install -e \".[demo]\")")
        return 0
    print("checking against HF transformers loading the same GGUF (float32, CPU) ...", flush=True)
    ref = hf_gguf_model(path)
    same = [hf_greedy_tokens(ref, o.prompt_token_ids, len(o.outputs[0].token_ids)) == o.outputs[0].token_ids
            for o in outs]
    print(f"matches HF transformers token for token: {'yes' if all(same) else 'NO'} "
          f"({sum(same)}/{len(same)} replies)")
    return 0 if all(same) else 1
