"""(a) The tensors each method writes, read back by an independent unpacker
(tests/quantize/reference.py), are the dense matrix the method put in the model."""
from __future__ import annotations

import pytest
import torch

from halinfer.quantize.awq import AWQ
from halinfer.quantize.fp8 import FP8
from halinfer.quantize.gptq import GPTQ
from halinfer.quantize.smoothquant import W8A8
from halinfer.testing.tiny import make_config

from . import reference

# Odd-ish shapes: 3 heads of 32, one KV head, an intermediate size that is not a power of two.
SHAPE = dict(hidden_size=96, intermediate_size=160, num_attention_heads=3, num_key_value_heads=1,
             num_hidden_layers=1)


def _layer(seed):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config("llama", **SHAPE), dtype=torch.float32)
    layer = model.model.layers[0]
    with torch.no_grad():
        layer.input_layernorm.weight.uniform_(0.5, 1.5)
        layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
    return layer


def _inputs(seed, tokens=200):
    g = torch.Generator().manual_seed(seed)
    h, i = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    out = {}
    for name, k in (("attn_in", h), ("attn_out", h), ("mlp_in", h), ("mlp_out", i)):
        x = torch.randn(tokens, k, generator=g)
        x[:, :3] *= 20  # a few outlier channels, as real activations have
        out[name] = x
    return out


CASES = {"awq-g32": (AWQ, dict(group_size=32)), "gptq-4bit-g32": (GPTQ, dict(group_size=32, bits=4)),
         "gptq-8bit-g32-asym": (GPTQ, dict(group_size=32, bits=8, sym=False)),
         "gptq-4bit-g32-act-order": (GPTQ, dict(group_size=32, bits=4, act_order=True)), "w8a8": (W8A8, {}),
         "fp8": (FP8, {})}


@pytest.mark.parametrize("case", list(CASES))
def test_written_tensors_unpack_to_the_dense_weight(case):
    cls, kw = CASES[case]
    qm = cls(**kw)
    layer = _layer(7)
    parts = qm.quantize_layer(layer, _inputs(8))
    cfg = {"quantization_config": qm.config()}
    assert set(parts) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    for name, p in parts.items():
        w = layer.get_submodule(name).weight
        assert torch.equal(reference.dense_of(p, cfg), w.float()), name


def test_layout_shapes_and_dtypes_are_the_published_ones():
    layer, x = _layer(1), _inputs(2)
    n, k = 160, 96  # gate_proj
    awq = AWQ(group_size=32).quantize_layer(_layer(1), x)["mlp.gate_proj"]
    assert (awq["qweight"].shape, awq["qzeros"].shape, awq["scales"].shape) == ((k, n // 8), (k // 32, n // 8),
                                                                              (k // 32, n))
    assert awq["qweight"].dtype == torch.int32 and awq["scales"].dtype == torch.float16
    gptq = GPTQ(group_size=32).quantize_layer(layer, x)["mlp.gate_proj"]
    assert (gptq["qweight"].shape, gptq["qzeros"].shape, gptq["scales"].shape, gptq["g_idx"].shape) == \
        ((k // 8, n), (k // 32, n // 8), (k // 32, n), (k,))
    assert gptq["g_idx"].dtype == torch.int32 and torch.equal(gptq["g_idx"], torch.arange(k, dtype=torch.int32) // 32)
    w8 = W8A8().quantize_layer(_layer(1), x)["mlp.gate_proj"]
    assert w8["weight"].dtype == torch.int8 and w8["weight_scale"].shape == (n, 1)
    f8 = FP8().quantize_layer(_layer(1))["mlp.down_proj"]  # [96, 160]: a partial 128 block each way
    assert f8["weight"].dtype == torch.float8_e4m3fn and f8["weight_scale_inv"].shape == (1, 2)
    assert f8["weight_scale_inv"].dtype == torch.float32


def test_awq_nibble_order_against_a_hand_built_word():
    """Column j of a row holding value j (j < 8) packs to the word with nibble i = order[i]."""
    from halinfer.core.ops.quant import awq_pack

    word = int(awq_pack(torch.arange(8).reshape(1, 8))[0, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == [0, 2, 4, 6, 1, 3, 5, 7]
