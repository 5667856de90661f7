"""Gated activations: out = act(x[..., :I]) * x[..., I:], gate first."""
import torch
import triton
import triton.language as tl

from .common import next_pow2, on_interpreter
from .pdl import launch_options, pdl_enter
from .tl_math import gelu_tanh

_SILU, _GELU, _GELU_TANH = 0, 1, 2
# act_and_mul's names of the activations these kernels compute (KIND)
KINDS = {"silu": _SILU, "gelu": _GELU, "gelu_tanh": _GELU_TANH}


@triton.jit
def act_mul(g, u, KIND: tl.constexpr):
    """act(g) * u in float32 for gate and up values g, u (the model dtype), before the product is
    rounded to that dtype.  Shared with the fused activation + quantization (act_mul_quant.py),
    so both compute the same bits."""
    gf = g.to(tl.float32)
    if KIND == 0:
        a = gf / (1.0 + tl.exp(-gf))
    elif KIND == 1:
        a = 0.5 * gf * (1.0 + tl.math.erf(gf * 0.7071067811865476))
    else:
        a = gelu_tanh(gf)
    # torch rounds the activation to the model dtype before the product: so do we.
    a = a.to(g.dtype).to(tl.float32)
    return a * u.to(tl.float32)


@triton.jit
def _act_and_mul_kernel(x_ptr, o_ptr, T, stride_x, stride_o, I, KIND: tl.constexpr, ROWS: tl.constexpr,
                        BLOCK: tl.constexpr, USE_PDL: tl.constexpr = False):
    row = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    cols = (tl.program_id(1) * BLOCK + tl.arange(0, BLOCK))[None, :]
    mask = (row < T) & (cols < I)
    pdl_enter(USE_PDL)
    g = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    u = tl.load(x_ptr + row * stride_x + I + cols, mask=mask, other=0.0)
    tl.store(o_ptr + row * stride_o + cols, act_mul(g, u, KIND).to(o_ptr.dtype.element_ty), mask=mask)


def gated_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """x [..., 2I] (gate first) as unit-stride rows [T, 2I], and I."""
    I2 = x.shape[-1]
    assert I2 % 2 == 0, f"gated activation needs an even last dim, got {I2}"
    x2 = x.reshape(-1, I2)
    return (x2 if x2.stride(-1) == 1 else x2.contiguous()), I2 // 2


def _act_and_mul(x: torch.Tensor, kind: int) -> torch.Tensor:
    interp = on_interpreter(x)
    x2, I = gated_rows(x)
    out = torch.empty((x2.shape[0], I), dtype=x.dtype, device=x.device)
    T = x2.shape[0]
    block = min(next_pow2(I), 1024 if not interp else 4096)
    rows = max(1, min(next_pow2(T), (16384 if interp else 1024) // block, 64))
    if T and I:
        grid = (-(-T // rows), -(-I // block))
        _act_and_mul_kernel[grid](x2, out, T, x2.stride(0), out.stride(0), I, KIND=kind, ROWS=rows, BLOCK=block,
                                  num_warps=4, **launch_options(x))
    return out.view(*x.shape[:-1], I)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    return _act_and_mul(x, _SILU)


def gelu_and_mul(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return _act_and_mul(x, _GELU if approximate == "none" else _GELU_TANH)
