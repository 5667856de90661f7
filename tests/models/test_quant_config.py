"""quantization_config parsing: each published variant maps to one spec; others are refused
by name, with the supported list."""
import pytest

from halinfer.core.quant_config import UnsupportedQuantization, parse_quant_config
from halinfer.testing.quant_ckpt import config_for


@pytest.mark.parametrize("method,opts,want", [
    ("gptq", dict(group=128, v2=True, desc_act=True), {"method": "gptq", "format": "v2", "desc_act": True}),
    ("gptq", dict(group=32, bits=8), {"method": "gptq", "bits": 8, "format": "v1"}),
    ("w8a8", {}, {"method": "w8a8"}),
    ("fp8", dict(block=(128, 128)), {"method": "fp8", "block": [128, 128]}),
    ("fp8-ct", dict(strategy="tensor", input_scale=0.1), {"method": "fp8", "block": None, "static_input": True}),
    ("pack", dict(group=128), {"method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False,
                               "format": "pack-quantized"}),
    ("pack", dict(group=32, bits=8, sym=False, actorder="group"),
     {"method": "gptq", "bits": 8, "group_size": 32, "sym": False, "desc_act": True, "format": "pack-quantized"}),
    ("pack", dict(group=-1, bits=4, sym=False), {"method": "gptq", "group_size": -1, "desc_act": False}),
])
def test_published_configs_parse(method, opts, want):
    spec = parse_quant_config(config_for(method, **opts))
    assert {k: spec[k] for k in want} == want


@pytest.mark.parametrize("qc,named", [
    ({"quant_method": "gptq", "bits": 3}, "bits=3"),
    ({"quant_method": "awq", "bits": 4, "version": "gemv"}, "gemv"),
    ({"quant_method": "fp8", "activation_scheme": "static"}, "static"),
    ({"quant_method": "bitsandbytes"}, "bitsandbytes"),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"g": {
        "weights": {"num_bits": 2, "type": "int", "strategy": "group", "group_size": 64}}}}, "pack-quantized.*2-bit"),
    ({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"g": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}}}, "weight-only"),
])
def test_unsupported_variants_are_named_with_the_supported_list(qc, named):
    with pytest.raises(UnsupportedQuantization, match=named) as e:
        parse_quant_config(qc)
    assert "supported:" in str(e.value) and "gptq" in str(e.value)
