"""Phi-3's LongRoPE past the original context, checked against transformers' own table.

The equivalence cases keep every sequence inside the original context because
transformers' Phi-3 re-encodes a whole sequence with the long factors once it grows
past it (prepare_inputs_for_generation drops the cache), which a KV cache cannot
reproduce.  What halinfer promises past that point (models/rope.py): each new position
is rotated as transformers rotates the newest token of a sequence that long, i.e.
with the long factors and the same attention scaling.  These tests check exactly
that, for the config as transformers 5 saves it and as Phi-3 checkpoints publish it.
"""
from __future__ import annotations

import torch

from halinfer.core.config import ModelConfig
from halinfer.models.rope import build_cos_sin_cache
from halinfer.models.llama import rope_spec
from halinfer.models.phi3 import _with_original_context
from halinfer.testing.tiny import make_config

ORIG, LENGTH = 64, 200


def _transformers_table(cfg, n: int) -> torch.Tensor:
    """[n, rot]: cos | sin halves, as transformers computes them for a sequence of n tokens."""
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    rope = Phi3RotaryEmbedding(cfg)
    cos, sin = rope(torch.zeros(1, dtype=torch.float32), torch.arange(n)[None])
    half = cos.shape[-1] // 2
    return torch.cat((cos[0, :, :half], sin[0, :, :half]), dim=-1)


def _ours(cfg_dict: dict) -> torch.Tensor:
    cfg = _with_original_context(ModelConfig(cfg_dict))
    return build_cos_sin_cache(rope_spec(cfg, cfg.head_dim), LENGTH)


def _check(ours: torch.Tensor, hf_cfg) -> None:
    short, long = _transformers_table(hf_cfg, ORIG), _transformers_table(hf_cfg, LENGTH)
    torch.testing.assert_close(ours[:ORIG], short, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[ORIG:], long[ORIG:], atol=1e-4, rtol=0)
    # the two factor sets differ by far more than the tolerance, so a swap is caught
    assert (short[1:] - long[1:ORIG]).abs().max() > 1e-2


def test_longrope_table_matches_transformers_as_saved():
    for family in ("phi3", "phi4-mini"):
        hf_cfg = make_config(family)
        _check(_ours(hf_cfg.to_dict()), hf_cfg)


def test_longrope_table_matches_transformers_as_published():
    """Published Phi-3 configs: rope_scaling {"type": "longrope", ...} and the original
    context at the top level only."""
    hf_cfg = make_config("phi3")
    d = hf_cfg.to_dict()
    rp = d.pop("rope_parameters")
    d["rope_theta"] = rp["rope_theta"]
    d["rope_scaling"] = {"type": "longrope", "short_factor": rp["short_factor"], "long_factor": rp["long_factor"]}
    d["original_max_position_embeddings"] = ORIG
    _check(_ours(d), hf_cfg)
