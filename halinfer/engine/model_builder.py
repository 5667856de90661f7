"""The model factory workers call (ModelSpec.factory): registry lookup, build, load.

It lives outside the core, which knows models only through core/model_protocol.py.
"""
from __future__ import annotations

import torch

from ..core.loader import init_dummy_weights, open_checkpoint
from ..core.model_protocol import ModelSpec


def build_model(spec: ModelSpec, ops, device: torch.device):
    from ..models.layers import ModelContext
    from ..models.registry import model_class

    ckpt = open_checkpoint(spec.checkpoint)
    cls = model_class(spec.architecture)
    ctx = ModelContext(ops=ops, dtype=spec.dtype, device=device, quant=spec.quant, max_model_len=spec.max_model_len)
    with torch.device(device):
        model = cls(ckpt.config, ctx)
    if spec.load_format == "dummy":
        init_dummy_weights(model, spec.seed)
    else:
        loaded = model.load_weights(ckpt.weights())
        missing = sorted(model.expected_params() - loaded)
        if missing:
            raise ValueError(f"checkpoint {spec.checkpoint!r} lacks {len(missing)} tensor(s) the model needs, e.g. "
                             f"{', '.join(missing[:5])}")
    return model.eval()


def check_architecture(arch: str) -> None:
    """Fail at once (before any worker starts) on an architecture no model implements."""
    from ..models.registry import model_class

    model_class(arch)
