"""transformers loading a GGUF file: the independent reference for halinfer's GGUF loader."""
from __future__ import annotations

import os

import torch


def hf_gguf_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))


def hf_gguf_model(path: str, dtype: torch.dtype = torch.float32):
    """transformers' own GGUF reader and dequantizer (it needs accelerate installed)."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                             gguf_file=os.path.basename(path), dtype=dtype,
                                             attn_implementation="eager")
    return m.eval()


@torch.inference_mode()
def hf_greedy_tokens(model, prompt: list[int], n: int) -> list[int]:
    """n argmax tokens, EOS not stopping (as halinfer's ignore_eos)."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=[], pad_token_id=0)
    return out[0, len(prompt):].tolist()
