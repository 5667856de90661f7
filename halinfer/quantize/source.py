"""A GGUF file as the quantizer's input: written out once as a Hugging Face float32
directory, with halinfer's own GGUF reader (core/gguf.py: names, Q/K un-permutation,
dequantization) for config and weights and transformers' GGUF tokenizer conversion for
the tokenizer files."""
from __future__ import annotations

import json
import os

from safetensors.torch import save_file


def gguf_to_hf_dir(gguf_path: str, out_dir: str) -> str:
    from ..core.gguf import GGUFCheckpoint, config_from_metadata

    ck = GGUFCheckpoint(gguf_path)
    names = {t.name for t in ck.reader.tensors}
    cfg = config_from_metadata(ck.metadata, names, gguf_path)
    os.makedirs(out_dir, exist_ok=True)
    tensors = {name: t.contiguous() for name, t in ck.weights(progress=False)}
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                        gguf_file=os.path.basename(gguf_path))
    tok.save_pretrained(out_dir)
    return out_dir
