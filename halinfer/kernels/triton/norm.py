"""RMSNorm with an optional fused residual add: one pass over each row."""
import torch
import triton
import triton.language as tl

from .common import next_pow2, on_interpreter
from .pdl import launch_options, pdl_enter


@triton.jit
def _rms_rows(x_ptr, r_ptr, w_ptr, s_ptr, rows, cols, mask, stride_x, stride_r, stride_s, H, eps,
              HAS_RES: tl.constexpr):
    """weight * normalised rows, float32 [ROWS, BLOCK] (0 outside ``mask``), before the cast to
    the output dtype; stores the new residual stream x + r when HAS_RES.  Shared with the fused
    norm + activation quantization (norm_quant.py), so both compute the same bits."""
    x = tl.load(x_ptr + rows * stride_x + cols, mask=mask, other=0.0)
    if HAS_RES:
        # The new residual stream is rounded to its dtype before it is normalised (as torch does).
        r = tl.load(r_ptr + rows * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(s_ptr.dtype.element_ty)
        tl.store(s_ptr + rows * stride_s + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv = tl.rsqrt(tl.sum(xf * xf, axis=1) / H + eps)[:, None]
    # HF convention: cast the normalised value to the input dtype, then multiply by the weight.
    y = (xf * inv).to(x.dtype).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    return y * w


@triton.jit
def _rms_norm_kernel(x_ptr, r_ptr, w_ptr, y_ptr, s_ptr, T,
                     stride_x, stride_r, stride_y, stride_s, H, eps,
                     HAS_RES: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, USE_PDL: tl.constexpr = False):
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK)[None, :]
    mask = (rows < T) & (cols < H)
    pdl_enter(USE_PDL)
    y = _rms_rows(x_ptr, r_ptr, w_ptr, s_ptr, rows, cols, mask, stride_x, stride_r, stride_s, H, eps, HAS_RES)
    tl.store(y_ptr + rows * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def launch_shape(T: int, H: int, interp: bool) -> tuple[int, int, int]:
    """(rows per program, BLOCK, num_warps) of the norm kernels: the fused norm + quant uses
    the same, so its row reductions run in the same order as rms_norm's."""
    block = next_pow2(H)
    warps = 1 if interp else (4 if block <= 2048 else 8 if block <= 8192 else 16)
    # Several rows per program when rows are short (always under the interpreter, which pays per program).
    rows = max(1, min(next_pow2(T), (16384 if interp else 1024) // block, 64))
    return rows, block, warps


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """core.ops.norm.rms_norm's contract; any leading dims."""
    interp = on_interpreter(x)
    shape, H = x.shape, x.shape[-1]
    x2 = _rows(x)
    T = x2.shape[0]
    s_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    y = torch.empty((T, H), dtype=torch.promote_types(weight.dtype, s_dtype), device=x.device)
    if residual is not None:
        r2 = _rows(residual)
        s = torch.empty((T, H), dtype=s_dtype, device=x.device)
    else:
        r2 = s = x2  # unused
    rows, block, warps = launch_shape(T, H, interp)
    if T:
        _rms_norm_kernel[(-(-T // rows),)](x2, r2, weight, y, s, T, x2.stride(0), r2.stride(0), y.stride(0),
                                            s.stride(0), H, float(eps), HAS_RES=residual is not None, ROWS=rows,
                                            BLOCK=block, num_warps=warps, **launch_options(x))
    y = y.view(shape)
    return y if residual is None else (y, s.view(shape))
