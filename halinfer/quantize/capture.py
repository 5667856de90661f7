"""Loading the float model and running it one decoder layer at a time, with forward
hooks collecting what each linear of the layer reads.

Only Llama-style decoders are handled (their layers all have the same module names):
the norm -> q/k/v, o, norm -> gate/up, down structure is what the methods fold scales
into.  Each layer is run on the previous layer's output *after* that layer was
quantized, so a layer's calibration sees the errors of the layers before it (as GPTQ
does sequentially).
"""
from __future__ import annotations

import json
import os

import torch

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")

# The linears of one decoder layer, grouped by the input they share, with the op before
# them that can absorb a per-input-channel scale (None: the group stands alone).
#   name -> (previous op, linears reading the same input)
GROUPS = {
    "attn_in": ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    "attn_out": ("self_attn.v_proj", ("self_attn.o_proj",)),
    "mlp_in": ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    "mlp_out": ("mlp.up_proj", ("mlp.down_proj",)),
}
LINEARS = tuple(n for _, names in GROUPS.values() for n in names)


def read_config(model_dir: str) -> dict:
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist (expected a Hugging Face checkpoint "
                                f"directory with config.json and safetensors, or a .gguf file)")
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir!r} has no config.json; expected a Hugging Face checkpoint directory")
    with open(path) as f:
        cfg = json.load(f)
    archs = cfg.get("architectures") or []
    if not archs or archs[0] not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{model_dir!r}: architecture {archs[0] if archs else None!r} cannot be quantized by "
                         f"halinfer quantize; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    if cfg.get("quantization_config"):
        raise ValueError(f"{model_dir!r} is already quantized ({cfg['quantization_config'].get('quant_method')!r}); "
                         f"quantize a floating-point checkpoint")
    return cfg


def load_float_model(model_dir: str):
    """The transformers model in float32 on the CPU (layers move to the device one at a time)."""
    from transformers import AutoModelForCausalLM

    read_config(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r} is not one of: cpu, cuda, auto")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here; use --device cpu")
    return torch.device(name)


class _Caught(Exception):
    pass


@torch.no_grad()
def first_layer_inputs(model, samples: torch.Tensor):
    """(hidden states [S, L, H] entering layer 0, the keyword arguments the model passes
    every layer).  The arguments (rotary cos/sin, mask) are caught from a one-sample run, so
    they broadcast over any batch of samples of the same length."""
    layers = model.model.layers
    caught = {}

    def hook(module, args, kwargs):
        caught["kwargs"] = dict(kwargs)
        raise _Caught

    h = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(samples[:1], use_cache=False)
    except _Caught:
        pass
    finally:
        h.remove()
    kwargs = caught["kwargs"]
    kwargs.pop("hidden_states", None)
    kwargs["use_cache"] = False
    kwargs["past_key_values"] = kwargs["past_key_value"] = None
    hidden = model.model.embed_tokens(samples)  # Llama-style decoders feed the embeddings unscaled
    return hidden, kwargs


def _to(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    return obj


@torch.no_grad()
def run_layer(layer, hidden: torch.Tensor, kwargs: dict, batch: int, device) -> torch.Tensor:
    kw = {k: _to(v, device) for k, v in kwargs.items()}
    outs = []
    for i in range(0, hidden.shape[0], batch):
        o = layer(hidden[i:i + batch].to(device), **kw)
        outs.append((o[0] if isinstance(o, tuple) else o).to(hidden.device))
    return torch.cat(outs)


@torch.no_grad()
def capture_inputs(layer, hidden: torch.Tensor, kwargs: dict, batch: int, device) -> dict[str, torch.Tensor]:
    """Group name -> the input its linears read, float32 [tokens, in_features] on ``device``
    (one capture per group: the linears of a group read the same tensor)."""
    store: dict[str, list[torch.Tensor]] = {g: [] for g in GROUPS}
    hooks = []
    for g, (_, names) in GROUPS.items():
        mod = layer.get_submodule(names[0])
        hooks.append(mod.register_forward_pre_hook(
            lambda m, args, g=g: store[g].append(args[0].reshape(-1, args[0].shape[-1]).float())))
    try:
        run_layer(layer, hidden, kwargs, batch, device)
    finally:
        for h in hooks:
            h.remove()
    return {g: torch.cat(v) for g, v in store.items()}


def progress(total: int, desc: str):
    from tqdm.auto import tqdm  # a dependency of halinfer already

    return tqdm(total=total, desc=desc, unit="layer")
