"""Configuration: the model's HF config.json as read, and the engine's settings."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    key = str(name).replace("torch.", "").lower()
    if key not in _DTYPES:
        raise ValueError(f"dtype {name!r} is not supported; accepted: auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[key]


class ModelConfig:
    """Read-only view of a checkpoint's config.json (a plain dict; no remote code).

    Attribute access returns the value or raises AttributeError; ``get`` takes a default.
    """

    def __init__(self, data: dict[str, Any], path: str | None = None):
        self._data = data
        self.path = path

    @classmethod
    def from_dir(cls, model_dir: str) -> "ModelConfig":
        p = os.path.join(model_dir, "config.json")
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{model_dir!r} has no config.json; a Hugging Face model directory is expected")
        try:
            with open(p) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p!r} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{p!r} must hold a JSON object, got {type(data).__name__}")
        cfg = cls(data, model_dir)
        cfg.validate(p)
        return cfg

    # Fields the model classes use as sizes: each must be a positive integer when present.
    INT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings")

    def validate(self, source: str | None = None) -> None:
        where = source or self.path or "config"
        for k in self.INT_FIELDS:
            v = self._data.get(k)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}: field {k!r} must be a positive integer, got {v!r} "
                                 f"({type(v).__name__})")

    def get(self, key: str, default: Any = None) -> Any:
        v = self._data.get(key, default)
        return default if v is None else v

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"config has no field {key!r}") from None

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def replace(self, **fields: Any) -> "ModelConfig":
        """A copy with some fields set: families whose remote-code configs use other names
        translate them into the names the shared layers read."""
        return ModelConfig({**self._data, **fields}, self.path)

    @property
    def architecture(self) -> str:
        archs = self._data.get("architectures") or []
        if not archs:
            raise ValueError("config.json names no 'architectures'; cannot tell which model class to build")
        return archs[0]

    @property
    def torch_dtype(self) -> torch.dtype:
        name = self._data.get("torch_dtype") or self._data.get("dtype") or "float32"
        return parse_dtype(name)

    @property
    def head_dim(self) -> int:
        return self.get("head_dim") or self.hidden_size // self.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return self.get("num_key_value_heads") or self.num_attention_heads

    @property
    def vocab_size(self) -> int:
        # ChatGLM's remote-code configs name it padded_vocab_size (no vocab_size at all).
        v = self.get("vocab_size") or self.get("padded_vocab_size") or self.text.get("vocab_size")
        if v is None:
            raise AttributeError("config has neither 'vocab_size' nor 'padded_vocab_size'")
        return int(v)

    @property
    def max_position(self) -> int:
        # seq_length: ChatGLM / Qwen (v1); model_max_length: Baichuan 13B (ALiBi, no position table).
        return int(self.get("max_position_embeddings") or self.get("seq_length") or self.get("model_max_length")
                   or self.text.get("max_position_embeddings") or 2048)

    @property
    def text(self) -> dict:
        """A vision-language model's text_config (llm_config: InternVL's remote code; empty for text-only models)."""
        return self.get("text_config") or self.get("llm_config") or {}

    def rope_params(self) -> tuple[float, str, dict]:
        """(theta, type, params) from either rope_parameters (transformers 5) or
        rope_theta + rope_scaling (older configs)."""
        rp = dict(self.get("rope_parameters") or self.text.get("rope_parameters") or {})
        rs = dict(self.get("rope_scaling") or self.text.get("rope_scaling") or {})
        merged = {**rs, **rp}
        theta = float(merged.get("rope_theta") or self.get("rope_theta") or 10000.0)
        rtype = merged.get("rope_type") or merged.get("type") or "default"
        return theta, rtype, merged


@dataclass
class EngineConfig:
    """The engine's settings (the LLM constructor's keyword arguments)."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None       # None: the backend's default for the device (Backend.default_max_num_seqs)
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.85
    block_size: int | None = None
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    kv_cache_dtype: str = "auto"
    num_kv_blocks: int | None = None      # override the computed KV capacity (tests, CPU)
    scheduling_policy: str = "separate"   # "separate" prefill/decode steps, or "mixed" (core/scheduler.py)
    prefill_interval: int = 16            # "separate": decode steps between admissions while slots are busy
    async_scheduling: bool = True         # launch decode step N+1 before reading step N's tokens
    seed: int = 0
    enable_expert_parallel: bool = False  # MoE with tensor_parallel_size > 1: split the experts across ranks
    allowed_media_domains: tuple = ()     # hosts whose http(s) image URLs may be fetched (none by default)
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not (0.0 < self.gpu_memory_utilization <= 1.0):
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if not isinstance(self.prefill_interval, int) or self.prefill_interval < 1:
            raise ValueError(f"prefill_interval must be an int >= 1, got {self.prefill_interval!r}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        # Which KV dtypes exist is the backend's to say (Backend.kv_cache_dtypes, checked by the
        # engine with the accepted list); here only the type.
        if not isinstance(self.kv_cache_dtype, str):
            raise ValueError(f"kv_cache_dtype must be a string such as 'auto' or 'int8'; got {self.kv_cache_dtype!r}")
