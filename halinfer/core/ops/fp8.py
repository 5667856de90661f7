"""FP8 (e4m3) GEMM reference with dynamic activation quantization.

One op covers the published FP8 layouts, once the loader has put the weight scales in
one shape: ``weight_scale`` float32 [N, ceil(K / block_k)], one scale per output row and
group of ``block_k`` inputs.  Block-scaled checkpoints (DeepSeek-V3, Qwen3-FP8: 128x128
blocks) repeat each block row's scales over its 128 output rows; per-channel checkpoints
(compressed-tensors ``float-quantized``) have block_k = K; per-tensor ones broadcast.
Rows, not blocks, so merged matrices (q/k/v) keep their own scales at any shard offset.
"""
from __future__ import annotations

import torch

FP8_MAX = 448.0          # largest finite float8_e4m3fn
FP8_MIN_SCALE = 1e-10    # the floor of a dynamic scale, as DeepSeek-V3's act_quant uses


def fp8_dequantize_weight(weight: torch.Tensor, scale: torch.Tensor, block: list[int] | None) -> torch.Tensor:
    """float32 [N, K] of a checkpoint's e4m3 ``weight`` [N, K] and its scale as published:
    block-scaled [ceil(N/bn), ceil(K/bk)] (``block`` = [bn, bk]), per channel [N, 1] or [N], or
    one per tensor."""
    w = weight.float()
    s = scale.float()
    N, K = w.shape
    if s.numel() == 1:
        return w * s.reshape(())
    if block is not None and s.dim() == 2 and tuple(s.shape) == (-(-N // block[0]), -(-K // block[1])):
        return w * s.repeat_interleave(block[0], 0)[:N].repeat_interleave(block[1], 1)[:, :K]
    if s.numel() == N:
        return w * s.reshape(N, 1)
    raise ValueError(f"an fp8 weight [{N}, {K}] with a scale of shape {tuple(s.shape)}: expected one per tensor, "
                     f"per row [{N}, 1] or per block {block}")


def quant_per_token_group_fp8(x: torch.Tensor, group: int):
    """Dynamic per-token, per-group activation quantization.

    x [T, K] -> (q float8_e4m3fn [T, K], scale float32 [T, ceil(K/group)]), with
    scale = max(absmax of the group, 1e-10) / 448 and q = x / scale (round to nearest).
    """
    T, K = x.shape
    G = -(-K // group)
    xf = torch.nn.functional.pad(x.float(), (0, G * group - K)).view(T, G, group)
    s = xf.abs().amax(-1).clamp(min=FP8_MIN_SCALE) / FP8_MAX
    q = (xf / s[..., None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(T, G * group)[:, :K], s


def fp8_linear(x, weight, weight_scale, block_k: int, bias=None, input_scale=None):
    """y[t, n] = sum over groups kb of  s_x[t, kb] * s_w[n, kb] * (q_x[t, kb-group] . q_w[n, kb-group]).

    x: [T, K] fp16/bf16 (float32 accepted); weight float8_e4m3fn [N, K]; weight_scale
    float32 [N, ceil(K/block_k)]; activations quantized per token in groups of block_k
    (quant_per_token_group_fp8), or, with ``input_scale`` (a float32 scalar tensor: a
    static per-tensor scale), as clamp(x / input_scale, +-448) in one group (then
    block_k must be K).  bias [N] or None.  Returns [T, N] in x's dtype.  Products and
    sums in float32.
    """
    T, K = x.shape
    if input_scale is not None:
        assert block_k >= K, "a static activation scale covers the whole row: block_k must be K"
        xq = (x.float() / input_scale.float()).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        xs = input_scale.float().reshape(1, 1).expand(T, 1)
    else:
        xq, xs = quant_per_token_group_fp8(x, block_k)
    return fp8_product(xq, xs, weight, weight_scale, block_k, bias, x.dtype)


def fp8_product(xq, xs, weight, weight_scale, block_k: int, bias, out_dtype):
    """fp8_linear after its activation quantization: xq float8_e4m3fn [T, K], xs float32
    [T, ceil(K/block_k)] (or [T, 1] for a whole-row scale)."""
    T, K = xq.shape
    xf, wf = xq.float(), weight.float()
    y = torch.zeros(T, weight.shape[0], dtype=torch.float32, device=xq.device)
    for kb in range(weight_scale.shape[1]):
        sl = slice(kb * block_k, min(K, (kb + 1) * block_k))
        y += (xf[:, sl] @ wf[:, sl].t()) * xs[:, kb:kb + 1] * weight_scale[None, :, kb].float()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)
