"""Writing the quantized checkpoint: safetensors shards (with an index when there is more
than one), config.json with ``quantization_config``, and the source's tokenizer files.

Tensors the method did not replace (embeddings, norms with folded scales, lm_head,
biases) are written in the source checkpoint's dtype; a tied lm_head is not written (the
loader ties it to the embedding, as transformers does).
"""
from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import save_file

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
              "generation_config.json")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def source_dtype(cfg: dict) -> torch.dtype:
    return DTYPES.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32").replace("torch.", ""),
                      torch.float32)


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, cur, size = [], {}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += n
    return shards + [cur] if cur else shards


def write_checkpoint(out_dir: str, src_dir: str, src_cfg: dict, model, quantized: dict[str, dict[str, torch.Tensor]],
                     quant_config: dict, max_shard_bytes: int = 2 << 30) -> str:
    """``quantized``: module name (e.g. model.layers.0.self_attn.q_proj) -> its tensors."""
    dtype = source_dtype(src_cfg)
    tied = bool(src_cfg.get("tie_word_embeddings", False))
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if (tied and name == "lm_head.weight") or (module in quantized and leaf == "weight"):
            continue
        tensors[name] = t.detach().to(dtype).contiguous()
    for module, parts in quantized.items():
        for leaf, t in parts.items():
            tensors[f"{module}.{leaf}"] = t.contiguous()
    os.makedirs(out_dir, exist_ok=True)
    shards = _shards(dict(sorted(tensors.items())), max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(out_dir, fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    cfg = dict(src_cfg)
    cfg["quantization_config"] = quant_config
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in SIDE_FILES:
        p = os.path.join(src_dir, name)
        if os.path.isfile(p):
            shutil.copy(p, os.path.join(out_dir, name))
    return out_dir
