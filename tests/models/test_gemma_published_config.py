"""Gemma 2 / Gemma 3 configs as the checkpoints publish them (no layer_types; Gemma 3's
rotary as rope_theta + rope_local_base_freq + rope_scaling) read the way transformers
reads them.  The equivalence cases use configs saved by transformers 5, which spell
all of this out, so this is where the published spellings are checked."""
from __future__ import annotations

import pytest

from halinfer.core.config import ModelConfig
from halinfer.models.gemma import layer_types, rope_specs

PUBLISHED_GEMMA3 = dict(  # gemma-3-4b's text config, shrunk to 8 layers
    hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_hidden_layers=8,
    intermediate_size=128, vocab_size=512, sliding_window=512, sliding_window_pattern=6, rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0, rope_scaling={"factor": 8.0, "rope_type": "linear"}, query_pre_attn_scalar=256)
PUBLISHED_GEMMA2 = dict(  # gemma-2-9b's config, shrunk to 5 layers
    hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_hidden_layers=5,
    intermediate_size=128, vocab_size=512, sliding_window=4096, rope_theta=10000.0, query_pre_attn_scalar=256,
    attn_logit_softcapping=50.0, final_logit_softcapping=30.0)


@pytest.mark.parametrize("cls_name,published,version", [("Gemma3TextConfig", PUBLISHED_GEMMA3, 3),
                                                        ("Gemma2Config", PUBLISHED_GEMMA2, 2)])
def test_published_layer_pattern_matches_transformers(cls_name, published, version):
    import transformers

    hf = getattr(transformers, cls_name)(**published)
    assert layer_types(ModelConfig(dict(published)), version) == list(hf.layer_types)


def test_published_gemma3_rotary_matches_transformers():
    from transformers import Gemma3TextConfig

    hf = Gemma3TextConfig(**PUBLISHED_GEMMA3).rope_parameters
    ours = rope_specs(ModelConfig(dict(PUBLISHED_GEMMA3)), 32, 3)
    for kind in ("full_attention", "sliding_attention"):
        assert ours[kind].base == hf[kind]["rope_theta"]
        assert ours[kind].rope_type == hf[kind]["rope_type"]
        assert (ours[kind].params or {}).get("factor") == hf[kind].get("factor")
    assert ours["full_attention"].rope_type == "linear" and ours["sliding_attention"].base == 10_000.0
