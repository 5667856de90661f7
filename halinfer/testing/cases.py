"""The model test cases: one tiny checkpoint recipe per behaviour worth checking.

A case names a family recipe from ``tiny.FAMILIES`` (a transformers config class
plus settings), config overrides, and, for families that exist only as remote code,
a converter from the transformers checkpoint into that family's layout
(``convert.py``).  The HF-equivalence tests run every case on the CPU in float32;
``support/seed.py`` maps each row of the seed support matrix to the cases that
back it, and the declared-support test runs those on every backend that claims
the row.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

from . import convert


@dataclass(frozen=True)
class Case:
    family: str                                   # key of tiny.FAMILIES
    overrides: dict = field(default_factory=dict)
    converter: Callable[[str, str], str] | None = None
    tol: float = 1e-4                             # float32 relative logit tolerance


CASES: dict[str, Case] = {
    "llama": Case("llama"),
    "llama3-rope": Case("llama3"),
    "llama-linear-rope": Case("llama-linear"),
    # max_position 40 < prompt + 32 tokens: decoding runs past the original context
    "llama-dynamic-rope": Case("llama-dynamic", {"max_position_embeddings": 40}),
    "llama3.2-tied": Case("llama-tied"),
    "llama-bias": Case("llama-bias"),
    "mistral-sliding-window": Case("mistral"),
    "qwen2-tied": Case("qwen2"),
    "qwen2-sliding-window": Case("qwen2-swa"),
    "qwen3-qk-norm": Case("qwen3"),
    "internlm2": Case("llama", converter=convert.llama_to_internlm2),
    "internlm3": Case("llama-bias", {"mlp_bias": False}, converter=convert.llama_to_internlm3),
    # dense families of issue 5
    "internlm": Case("llama-mha-bias", converter=convert.llama_to_internlm),
    # Code Llama's config as published: rope_theta 1e6 at the top level (transformers 4 layout)
    "codellama-rope-theta": Case("llama", {"rope_theta": 1e6}, converter=convert.llama_published_config),
    "gemma": Case("gemma"),
    "gemma2-softcap-sliding": Case("gemma2"),
    "gemma3-text": Case("gemma3"),
    "phi3-longrope-sliding": Case("phi3"),
    "phi4-mini-partial-rotary": Case("phi4-mini"),
    "starcoder2": Case("starcoder2"),
    "glm4-hf": Case("glm"),
    "glm4-0414": Case("glm4"),
    "chatglm2": Case("glm", converter=convert.glm_to_chatglm),
    "glm4-chatglm": Case("glm", {"rope_theta": 5e6}, converter=convert.glm_to_chatglm),   # rope_ratio 500
    "baichuan-7b": Case("llama-mha", converter=convert.llama_to_baichuan_7b),
    "baichuan2-7b": Case("llama-mha-unit-head", converter=convert.llama_to_baichuan2_7b),
    "baichuan2-13b-alibi": Case("llama-alibi", converter=convert.llama_to_baichuan2_13b),
    "qwen-v1": Case("qwen2-mha", converter=convert.qwen2_to_qwen),
    # mixture of experts / latent attention
    "mixtral": Case("mixtral"),
    "qwen2-moe": Case("qwen2-moe"),
    "qwen3-moe": Case("qwen3-moe"),
    "deepseek-moe": Case("qwen2-moe-as-deepseek", converter=convert.qwen2_moe_to_deepseek_moe),
    "deepseek-v2": Case("deepseek-v2"),
    "deepseek-v2-lite": Case("deepseek-v2-lite"),
    "minicpm3": Case("minicpm3"),
    "phi3.5-moe": Case("phimoe"),
    "glm4.5-moe": Case("glm4-moe"),
    "gpt-oss": Case("gpt-oss"),
    "llama4-text": Case("llama4"),
}


def build_case(case_id: str, workdir: str, cache: dict | None = None) -> tuple[str, str]:
    """(model_dir, reference_dir) for a case, built under workdir (reference dirs cached by recipe)."""
    import os

    from .tiny import save_tiny_model

    c = CASES[case_id]
    key = c.family + repr(sorted(c.overrides.items()))
    cache = {} if cache is None else cache
    if key not in cache:
        path = os.path.join(workdir, "ref-" + str(len(cache)))
        # The seed follows the recipe, not the build order: a case is the same model however
        # many other cases a run builds first.
        cache[key] = save_tiny_model(c.family, path, seed=zlib.crc32(key.encode()) % 1000, **c.overrides)
    ref = cache[key]
    if c.converter is None:
        return ref, ref
    return c.converter(ref, os.path.join(workdir, "conv-" + case_id)), ref
