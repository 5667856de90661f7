"""What the vision-language families share: a language model built from ``text_config``,
image features merged at their token rows, and checkpoint names split between the parts.

The worker calls ``encode_images`` (through the encoder cache, once per image) and then
``forward(..., mm_embeds=(rows, features))`` on prefill steps holding image tokens; every
other step is the language model's, unchanged (decode graphs included).
"""
from __future__ import annotations

from typing import Iterable

import torch

from ...core.config import ModelConfig
from ..base import CausalLM
from ..layers import ModelContext
from .blocks import load_by_name

# text_config model_type -> the language model class (module:Class of the registry's modules)
TEXT_MODELS = {
    "llama": "llama:LlamaForCausalLM", "mistral": "llama:LlamaForCausalLM", "qwen2": "llama:Qwen2ForCausalLM",
    "qwen3": "llama:Qwen3ForCausalLM", "internlm2": "internlm2:InternLM2ForCausalLM",
}


def text_config(cfg: ModelConfig) -> ModelConfig:
    """The language model's config, with the top-level fields it inherits."""
    text = dict(cfg.get("text_config") or {})
    if "vocab_size" not in text and "vocab_size" in cfg:
        text["vocab_size"] = cfg.get("vocab_size")
    if cfg.get("tie_word_embeddings") is not None:   # transformers ties the composite model by the top level
        text["tie_word_embeddings"] = cfg.get("tie_word_embeddings")
    return ModelConfig(text, cfg.path)


def build_text_model(cfg: ModelConfig, ctx: ModelContext) -> CausalLM:
    import importlib

    kind = cfg.get("model_type", "llama")
    target = TEXT_MODELS.get(kind)
    if target is None:
        raise ValueError(f"text model type {kind!r} is not supported in a vision-language model; "
                         f"supported: {', '.join(sorted(TEXT_MODELS))}")
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(f"halinfer.models.{mod}"), cls)(cfg, ctx)


# Where llava-hf style checkpoints (LLaVA, LLaVA-NeXT, Gemma 3) keep the tower and the projector,
# with and without transformers 5's "model." wrapper.
TOWER_AND_PROJECTOR_PREFIXES = (
    ("model.vision_tower.vision_model.", "vision_tower"), ("vision_tower.vision_model.", "vision_tower"),
    ("model.vision_tower.", "vision_tower"), ("vision_tower.", "vision_tower"),
    ("model.multi_modal_projector.", "multi_modal_projector"), ("multi_modal_projector.", "multi_modal_projector"))


class VisionLanguageModel(CausalLM):
    """Subclasses build ``self.language_model`` (a CausalLM) and their vision parts, set
    ``vision_prefixes`` (checkpoint prefix -> our module name, tried in order) and
    implement ``encode_images``."""

    # checkpoint prefix -> where the rest of the name goes: "lm:" the language model, else a module here
    prefixes: tuple[tuple[str, str], ...] = ()
    lm_prefixes: tuple[tuple[str, str], ...] = (
        ("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."),
        ("model.language_model.", "model."), ("lm_head.", "lm_head."), ("language_model.", "model."),
    )

    def kv_cache_spec(self):
        return self.language_model.kv_cache_spec()

    def tie_embeddings(self):
        self.language_model.tie_embeddings()

    def embed(self, input_ids: torch.Tensor, mm_embeds) -> torch.Tensor:
        x = self.language_model.model.embed_tokens(input_ids)
        if mm_embeds is not None:
            rows, feats = mm_embeds
            x = x.index_copy(0, rows, feats.to(x.dtype))
        return x

    def forward(self, input_ids, positions, meta, mm_embeds=None):
        x = self.embed(input_ids, mm_embeds)
        return self.language_model.model(input_ids, positions, meta, inputs_embeds=x)

    def compute_logits(self, hidden):
        return self.language_model.compute_logits(hidden)

    def encode_images(self, items: list[dict]) -> list[torch.Tensor]:
        """One feature tensor [tokens_i, hidden] per image, from the processor's outputs."""
        raise NotImplementedError

    def ignored(self, part: str, name: str) -> bool:
        """Checkpoint tensors of parts this model never runs (layers past the features used)."""
        return False

    def split_name(self, name: str) -> tuple[str, str]:
        """(our part, the name inside it) for a checkpoint tensor name."""
        for pre, part in self.prefixes:
            if name.startswith(pre):
                return part, name[len(pre):]
        for pre, repl in self.lm_prefixes:
            if name.startswith(pre):
                return "lm", repl + name[len(pre):]
        raise KeyError(f"checkpoint tensor {name!r} belongs to no part of {type(self).__name__} "
                       f"(expected prefixes: {', '.join(p for p, _ in self.prefixes + self.lm_prefixes)})")

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        parts: dict[str, list] = {}
        for name, t in weights:
            part, rest = self.split_name(name)
            if self.ignored(part, rest):
                continue
            parts.setdefault(part, []).append((rest, t))
        loaded = {f"language_model.{n}" for n in self.language_model.load_weights(parts.pop("lm", []))}
        for part, items in parts.items():
            loaded |= {f"{part}.{n}" for n in load_by_name(getattr(self, part), items, f"{part}.")}
        return loaded

    def expected_params(self) -> set[str]:
        lm = {f"language_model.{n}" for n in self.language_model.expected_params()}
        return lm | {n for n, _ in self.named_parameters() if not n.startswith("language_model.")}
