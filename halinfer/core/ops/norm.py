"""Normalisation references: RMSNorm (with fused residual add) and LayerNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """RMSNorm over the last dim, optionally after adding a residual.

    x, residual: [T, H] in the model dtype; weight: [H].
    Without residual: returns ``y = weight * (x / sqrt(mean(x^2) + eps))``.
    With residual: ``s = x + residual`` (model dtype), returns ``(y(s), s)``; the
    second output is the new residual stream.
    The statistics are computed in float32; the normalised value is cast to the
    input dtype before the weight multiply (the HF Llama convention).
    """
    if residual is not None:
        x = x + residual
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    y = weight * y.to(x.dtype)
    return (y, x) if residual is not None else y


def layer_norm(x, weight, bias, eps: float, residual: torch.Tensor | None = None):
    """LayerNorm over the last dim (weight/bias may be None), computed in float32.

    Same residual convention as rms_norm: with ``residual`` returns ``(y, x + residual)``.
    """
    if residual is not None:
        x = x + residual
    y = F.layer_norm(
        x.float(), (x.shape[-1],),
        None if weight is None else weight.float(),
        None if bias is None else bias.float(), eps,
    ).to(x.dtype)
    return (y, x) if residual is not None else y
