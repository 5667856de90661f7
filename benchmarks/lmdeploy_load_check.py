"""CPU check that LMDeploy 0.18's own loading code reads a checkpoint from make_quant_peer_ckpt.py.
No GPU is needed. It builds LMDeploy's patched model on the CPU (the PyTorch engine's
build_patched_model, with the QuantizationConfig it derives from config.json), loads the
checkpoint with its ModelWeightLoader (the path the engine takes), and compares every
parameter with the file's tensors. Merged qkv / gate_up are compared with the concatenation
of their parts. Meant for a tiny model:
    PYTHONPATH=<site with the payload's pure-Python wheels>:.peers/payload/py \\
        python3 benchmarks/lmdeploy_load_check.py /tmp/tiny-awq
The payload's pyzmq and pybase64 wheels are built for cp312. On another Python, import-only
stand-ins take their place (model building and loading use neither).
"""
import json
import os
import sys
import types

import torch


def _stand_in(name):
    class Any:
        def __init__(self, *a, **k):
            pass

        def __getattr__(self, n):
            return Any()

        def __call__(self, *a, **k):
            return Any()

    def attr(n):
        if n.startswith("__"):
            raise AttributeError(n)
        return Any

    m = types.ModuleType(name)
    m.__getattr__ = attr
    return m


try:
    import zmq  # noqa: F401
    import zmq.asyncio  # noqa: F401
except ImportError:
    sys.modules["zmq"] = _stand_in("zmq")
    sys.modules["zmq.asyncio"] = sys.modules["zmq"].asyncio = _stand_in("zmq.asyncio")
    print("(zmq: import-only stand-in)")
try:
    import pybase64  # noqa: F401
except ImportError:
    import base64

    sys.modules["pybase64"] = base64
    print("(pybase64: the standard library's base64 stands in)")

import lmdeploy.pytorch.config as C  # noqa: E402
from lmdeploy.pytorch.config import ModelConfig  # noqa: E402
from lmdeploy.pytorch.models.patch import BuildModelContext, build_patched_model  # noqa: E402
from lmdeploy.pytorch.weight_loader.model_weight_loader import ModelWeightLoader  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

MERGED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def main(d):
    C.is_bf16_supported = lambda *a, **k: True   # checked against the device; none here
    mc = ModelConfig.from_pretrained(d, dtype="bfloat16")   # what lmdeploy_peer.py asks for
    print("LMDeploy model dtype:", mc.dtype, "| quant_method:", mc.quant_config.quant_method,
          "| quant_dtype:", mc.quant_config.quant_dtype)
    with torch.inference_mode():
        model = build_patched_model(mc, device=torch.device("cpu"),
                                    build_model_ctx=BuildModelContext(quant_config=mc.quant_config))
        for _, p in model.named_parameters():   # anything the loader misses stays a sentinel
            p.data.fill_(float("nan") if p.dtype.is_floating_point else -77)
        ModelWeightLoader(d).load_model_weights(model)
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        files = set(json.load(f)["weight_map"].values())
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(d, f)))
    bad, n = [], 0
    for name, p in model.named_parameters():
        n += 1
        mod, _, leaf = name.rpartition(".")
        parent, _, last = mod.rpartition(".")
        if last in MERGED:   # AWQ packs outputs along dim 1; int8 weight and scale are [out, ...]
            want = torch.cat([sd[f"{parent}.{x}.{leaf}"] for x in MERGED[last]],
                             1 if leaf in ("qweight", "qzeros", "scales") else 0)
        else:
            want = sd[name]
        if p.shape != want.shape or not torch.equal(p.data, want.to(p.dtype)):
            bad.append(f"{name} {tuple(p.shape)} {p.dtype} vs file {tuple(want.shape)} {want.dtype}")
    layer = model.model.layers[0]
    kinds = {k: type(getattr(layer.self_attn if k in ("qkv_proj", "o_proj") else layer.mlp, k)).__name__
             for k in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}
    kinds.update(input_layernorm=type(layer.input_layernorm.impl).__name__,
                 final_norm=type(model.model.norm.impl).__name__, lm_head=type(model.lm_head).__name__)
    print("layer 0 modules:", kinds)
    print("layer 0 parameters:", ", ".join(f"{k} {tuple(p.shape)} {str(p.dtype)[6:]}"
                                            for k, p in layer.named_parameters()))
    print(f"{n} LMDeploy parameters compared with the checkpoint: {len(bad)} differ")
    for b in bad:
        print("  DIFFERS", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
