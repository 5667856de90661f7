"""Writing a tiny transformers checkpoint as a GGUF file, laid out as llama.cpp's
converter lays it out (its key names, its tensor names, its Q/K row permutation for
llama), so the GGUF loader can be checked on architectures with no published file here.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.gguf import LAYER_NAMES, TOP_NAMES

# transformers module -> GGUF module: the loader's tables inverted.  A wrong entry there
# still shows: transformers, the reference, reads the file with its own names.
LAYER = {hf: g for g, hf in LAYER_NAMES.items()}
TOP = {hf: g for g, hf in TOP_NAMES.items()}


def _gguf_name(name: str) -> str | None:
    mod, _, kind = name.rpartition(".")
    if mod in TOP:
        return f"{TOP[mod]}.{kind}"
    parts = mod.split(".")
    if parts[:2] == ["model", "layers"]:
        rest = ".".join(parts[3:])
        if rest in LAYER:
            return f"blk.{parts[2]}.{LAYER[rest]}.{kind}"
    return None


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's conversion: each head's rotate-half rows become interleaved pairs."""
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *rest).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model_dir: str, path: str, arch: str, quantize: str | None = None) -> str:
    """``model_dir``: a saved transformers model of GGUF architecture ``arch`` (llama, qwen2, qwen3).
    ``quantize="Q8_0"`` stores the 2-D matrices quantized (the embedding included)."""
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    tensors = load_file(f"{model_dir}/model.safetensors")
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(cfg, "rope_theta", 10000.0)
    w.add_rope_freq_base(float(theta))
    w.add_vocab_size(cfg.vocab_size)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    qt = getattr(gguf.GGMLQuantizationType, quantize) if quantize else None
    for name, t in tensors.items():
        gname = _gguf_name(name)
        if gname is None or (name == "lm_head.weight" and cfg.tie_word_embeddings):
            continue
        a = t.to(torch.float32).numpy()
        if arch == "llama" and ".attn_q." in gname:
            a = permute_qk(a, cfg.num_attention_heads)
        elif arch == "llama" and ".attn_k." in gname:
            a = permute_qk(a, cfg.num_key_value_heads)
        if qt is not None and a.ndim == 2 and a.shape[1] % 32 == 0:
            w.add_tensor(gname, gguf.quants.quantize(a, qt), raw_dtype=qt)
        else:
            w.add_tensor(gname, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
