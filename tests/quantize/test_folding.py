"""The scales AWQ and SmoothQuant fold into the ops before a linear leave the float model's
function unchanged: with the rounding switched off, the transformed model computes the
original's logits (a scale applied to the weights but not divided out, or folded into
the wrong channels, breaks this)."""
from __future__ import annotations

import pytest
import torch

from halinfer.quantize import awq, capture, smoothquant
from halinfer.quantize.calibration import make_samples, builtin_text
from halinfer.testing.tiny import save_tiny_model

SHAPES = {"gqa": dict(num_attention_heads=4, num_key_value_heads=2), "mha": dict(num_attention_heads=3,
                                                                                 num_key_value_heads=3)}


@pytest.mark.parametrize("method", ["awq", "w8a8"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_folded_scales_keep_the_float_logits(tmp_path, monkeypatch, method, shape):
    from transformers import AutoTokenizer

    src = save_tiny_model("llama", str(tmp_path / "m"), seed=2, hidden_size=96, intermediate_size=160,
                          num_hidden_layers=2, **SHAPES[shape])
    # identity "rounding": the dense weight a method installs is its input, scaled
    if method == "awq":
        real = awq.quantize_groups
        monkeypatch.setattr(awq, "quantize_groups", lambda w, *a, **k: (*real(w, *a, **k)[:3], w))
        # a random scale per channel instead of the search's (which may pick s = 1 for a group)
        g = torch.Generator().manual_seed(9)
        monkeypatch.setattr(awq, "search_scale", lambda x, ws, group, tie=None: (torch.rand(x.shape[1], generator=g) * 1.5 + 0.5,
                                                                       []))
        qm = awq.AWQ(group_size=32)
    else:
        real8 = smoothquant.int8_per_channel
        monkeypatch.setattr(smoothquant, "int8_per_channel", lambda w: (*real8(w)[:2], w))
        qm = smoothquant.W8A8()
    model = capture.load_float_model(src)
    ids = make_samples(AutoTokenizer.from_pretrained(src), builtin_text(), 3, 40)
    with torch.no_grad():
        before = model(ids).logits
        hidden, kw = capture.first_layer_inputs(model, ids)
        scaled = []
        for layer in model.model.layers:
            prev = [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
            was = [p.clone() for p in prev]
            qm.quantize_layer(layer, capture.capture_inputs(layer, hidden, kw, 2, "cpu"))
            scaled.append([not torch.equal(a, b) for a, b in zip(was, prev)])
            hidden = capture.run_layer(layer, hidden, kw, 2, "cpu")
        after = model(ids).logits
    # both norms absorbed a scale in every layer (the linear-to-linear folds, up -> down and
    # v -> o, tied over the heads of a KV head under grouped-query attention, are covered by
    # the logits check alone)
    assert scaled == [[True, True]] * len(scaled)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4 * before.abs().max()), \
        float((after - before).abs().max())
