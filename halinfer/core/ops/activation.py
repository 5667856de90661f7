"""Activations.  Gated ones take [..., 2*I] with the gate in the first half, the up
projection in the second, and return [..., I]; ``gelu`` is the plain (non-gated)
activation of MLPs such as StarCoder2's c_fc -> gelu -> c_proj."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


def gelu_and_mul(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """approximate: "none" (erf) or "tanh"."""
    d = x.shape[-1] // 2
    return F.gelu(x[..., :d], approximate=approximate) * x[..., d:]


def swiglu_oai(x: torch.Tensor, alpha: float = 1.702, limit: float = 7.0) -> torch.Tensor:
    """gpt-oss's clamped SwiGLU (gate first): gate clamped above at ``limit``, up to
    [-limit, limit]; ``out = (up + 1) * gate * sigmoid(alpha * gate)``."""
    d = x.shape[-1] // 2
    gate = x[..., :d].clamp(max=limit)
    up = x[..., d:].clamp(min=-limit, max=limit)
    return (up + 1) * (gate * torch.sigmoid(gate * alpha))


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Elementwise GELU, same shape and dtype as x; approximate: "none" (erf) or "tanh"."""
    return F.gelu(x, approximate=approximate)


ACTIVATIONS = {
    "silu": silu_and_mul,
    "gelu": gelu_and_mul,
    "gelu_tanh": lambda x: gelu_and_mul(x, "tanh"),
    "swiglu_oai": swiglu_oai,
}
