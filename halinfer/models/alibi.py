"""ALiBi head slopes: model maths (the attention op takes the slopes as an argument)."""
from __future__ import annotations

import math

import torch


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """float32 [num_heads]: ALiBi head slopes (Press et al.), including the non-power-of-two interleave."""
    p = 2 ** math.floor(math.log2(num_heads))
    base = 2.0 ** (-8.0 / p)
    slopes = [base ** (i + 1) for i in range(p)]
    if p < num_heads:
        extra = 2.0 ** (-4.0 / p)
        slopes += [extra ** (2 * i + 1) for i in range(num_heads - p)]
    return torch.tensor(slopes, dtype=torch.float32)
