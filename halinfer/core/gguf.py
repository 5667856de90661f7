"""GGUF files (llama.cpp's format) as a Checkpoint.

The metadata becomes a Hugging Face style config, the tensors are renamed to
transformers' names and dequantized to float32 with the ``gguf`` package
(llama.cpp's gguf-py), so the model families load them exactly as they load a
safetensors directory.  Two layouts llama.cpp changes at conversion are undone
here: the Q/K row permutation of llama-architecture attention, and the +1 folded
into Gemma norms.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterator

import numpy as np
import torch

from .config import ModelConfig
from .loader import Checkpoint

# general.architecture -> (HF architectures name, model_type)
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "mistral": ("MistralForCausalLM", "mistral"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "gemma": ("GemmaForCausalLM", "gemma"),
    "gemma2": ("Gemma2ForCausalLM", "gemma2"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
}
# llama.cpp permutes Q/K rows (for its interleaved rotary) only for these.
PERMUTED_QK = {"llama", "mistral"}
GEMMA = {"gemma", "gemma2", "gemma3"}

# metadata key (after "<arch>.") -> config field
CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.key_length": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.sliding_window": "sliding_window",
    "attn_logit_softcapping": "attn_logit_softcapping",
    "final_logit_softcapping": "final_logit_softcapping",
}

# per-layer GGUF module -> transformers module (Gemma 2/3 override the norms)
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
SANDWICH_NAMES = {"ffn_norm": "pre_feedforward_layernorm", "post_attention_norm": "post_attention_layernorm",
                  "post_ffw_norm": "post_feedforward_layernorm"}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _reader(path: str):
    try:
        import gguf
    except ImportError as e:
        raise ImportError(f"reading {path!r} needs the gguf package: pip install gguf  "
                          f"(or pip install -e \".[demo]\")") from e
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"{path!r} is not a readable GGUF file: {type(e).__name__}: {e}") from e


def read_metadata(reader) -> dict[str, Any]:
    """Every metadata field as a Python value (token arrays included)."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = field.contents()
    return out


def config_from_metadata(md: dict[str, Any], tensor_names: set[str], path: str) -> dict[str, Any]:
    arch = md.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path!r}: GGUF architecture {arch!r} is not supported; supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    hf_arch, model_type = ARCHITECTURES[arch]
    cfg: dict[str, Any] = {"architectures": [hf_arch], "model_type": model_type, "torch_dtype": "float32"}
    for key, name in CONFIG_KEYS.items():
        if f"{arch}.{key}" in md:
            cfg[name] = md[f"{arch}.{key}"]
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
               if k not in cfg]
    if missing:
        raise ValueError(f"{path!r}: GGUF metadata lacks {', '.join(f'{arch}.{k}' for k in missing)}")
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    if "tokenizer.ggml.tokens" in md:
        cfg["vocab_size"] = len(md["tokenizer.ggml.tokens"])
    elif f"{arch}.vocab_size" in md:
        cfg["vocab_size"] = md[f"{arch}.vocab_size"]
    else:
        raise ValueError(f"{path!r}: GGUF metadata gives no vocabulary (tokenizer.ggml.tokens or {arch}.vocab_size)")
    cfg["tie_word_embeddings"] = "output.weight" not in tensor_names  # llama.cpp omits a tied head
    for name in ("bos", "eos", "padding"):
        if f"tokenizer.ggml.{name}_token_id" in md:
            cfg[f"{'pad' if name == 'padding' else name}_token_id"] = md[f"tokenizer.ggml.{name}_token_id"]
    scaling = md.get(f"{arch}.rope.scaling.type")
    if scaling and scaling != "none":
        cfg["rope_scaling"] = {"rope_type": scaling, "factor": md.get(f"{arch}.rope.scaling.factor", 1.0)}
        if f"{arch}.rope.scaling.original_context_length" in md:
            cfg["rope_scaling"]["original_max_position_embeddings"] = \
                md[f"{arch}.rope.scaling.original_context_length"]
    if "rope_freqs.weight" in tensor_names:
        # Llama 3.1-style rope: llama.cpp stores precomputed frequency factors, not the
        # parameters halinfer's rope is built from; loading without them would be wrong.
        raise ValueError(f"{path!r} carries rope_freqs.weight (llama3 rope scaling), which the GGUF loader "
                         "does not read yet; use the Hugging Face checkpoint")
    if arch == "qwen2":
        cfg["use_sliding_window"] = False
    if arch in GEMMA:
        cfg["hidden_act"] = "gelu_pytorch_tanh"
        cfg["query_pre_attn_scalar"] = cfg["head_dim"]
        if arch == "gemma3":
            # Gemma 3: five sliding-window layers, then one global; local layers use base 10000.
            n = cfg["num_hidden_layers"]
            cfg["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]
            cfg["rope_local_base_freq"] = 10000.0
        elif arch == "gemma2":
            n = cfg["num_hidden_layers"]
            cfg["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    return cfg


def hf_name(arch: str, name: str) -> str:
    """A GGUF tensor name in transformers' spelling (unknown names come back as they are)."""
    base, _, kind = name.rpartition(".")
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{kind}"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if m:
        layer, mod = m.groups()
        table = {**LAYER_NAMES, **SANDWICH_NAMES} if arch in ("gemma2", "gemma3") else LAYER_NAMES
        if mod in table:
            return f"model.layers.{layer}.{table[mod]}.{kind}"
    return name


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K permutation: it regroups each head's rows from the
    rotate-half order (first half, second half) into interleaved pairs."""
    rest = w.shape[1:]
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def supported_tensor_types() -> list[str]:
    import gguf
    from gguf.quants import _type_traits  # the formats gguf-py can dequantize

    base = [gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16]
    return sorted({t.name for t in base} | {t.name for t in _type_traits})


class GGUFCheckpoint(Checkpoint):
    """One .gguf file: config, tokenizer and weights all come from it."""

    def __init__(self, path: str):
        self.path = path
        self.reader = _reader(path)
        self.metadata = read_metadata(self.reader)
        self.arch = self.metadata.get("general.architecture")
        names = {t.name for t in self.reader.tensors}
        self._check_types()
        self.config = ModelConfig(config_from_metadata(self.metadata, names, path), os.path.dirname(path))
        self.config.validate(path)

    def _check_types(self) -> None:
        ok = set(supported_tensor_types())
        bad = sorted({(t.name, t.tensor_type.name) for t in self.reader.tensors if t.tensor_type.name not in ok})
        if bad:
            raise ValueError(f"{self.path!r}: tensor type {bad[0][1]} (tensor {bad[0][0]!r}) cannot be "
                             f"dequantized; supported types: {', '.join(sorted(ok))}")

    def weights(self, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        from gguf.quants import dequantize

        cfg = self.config
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.reader.tensors), desc="Dequantizing GGUF", unit="tensor", leave=False)
        try:
            for t in self.reader.tensors:
                w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
                name = hf_name(self.arch, t.name)
                if self.arch in PERMUTED_QK:
                    if name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.q_proj.bias"):
                        w = unpermute_qk(w, cfg.num_attention_heads)
                    elif name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.k_proj.bias"):
                        w = unpermute_qk(w, cfg.num_kv_heads)
                if self.arch in GEMMA and name.endswith("norm.weight"):
                    w = w - 1.0  # llama.cpp stored 1 + w; transformers' layout keeps w
                w = w if w.flags.writeable and w.flags.c_contiguous else np.array(w)  # own, writable memory
                yield name, torch.from_numpy(w)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def tokenizer(self):
        from .gguf_tokenizer import build_tokenizer

        return build_tokenizer(self.metadata, self.path)

    def eos_token_ids(self, tokenizer) -> set[int]:
        ids = {int(self.config.eos_token_id)} if "eos_token_id" in self.config else set()
        if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            ids.add(int(tokenizer.eos_token_id))
        # llama.cpp's end-of-generation token (e.g. <|im_end|>, <|eot_id|>) ends a turn too.
        eot = self.metadata.get("tokenizer.ggml.eot_token_id")
        if eot is not None:
            ids.add(int(eot))
        return ids
