"""FP8 e4m3 weights with one scale per 128 x 128 block, as DeepSeek-V3 publishes them:
``weight`` float8_e4m3fn [N, K] and ``weight_scale_inv`` float32 [ceil(N/128), ceil(K/128)],
dense = weight * weight_scale_inv per block; scale = max|block| / 448.  Activations are
quantized at run time (dynamic, per token in groups of 128), so no calibration is needed.
"""
from __future__ import annotations

import torch

from .capture import LINEARS

FP8_MAX = 448.0


def fp8_blocks(w: torch.Tensor, block=(128, 128)):
    """(float8_e4m3fn [N, K], float32 scale_inv [ceil(N/bn), ceil(K/bk)], dense [N, K])."""
    N, K = w.shape
    bn, bk = block
    R, C = -(-N // bn), -(-K // bk)
    padded = torch.nn.functional.pad(w.float(), (0, C * bk - K, 0, R * bn - N))
    blocks = padded.view(R, bn, C, bk)
    s = (blocks.abs().amax((1, 3)) / FP8_MAX).clamp(min=1e-12)
    q = (blocks / s[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    dense = (q.float() * s[:, None, :, None]).view(R * bn, C * bk)[:N, :K]
    return q.view(R * bn, C * bk)[:N, :K].contiguous(), s, dense.contiguous()


class FP8:
    name = "fp8"
    needs_calibration = False

    def __init__(self, **_):
        self.block = (128, 128)

    def config(self) -> dict:
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": list(self.block)}

    @torch.no_grad()
    def quantize_layer(self, layer, inputs=None) -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        for n in LINEARS:
            mod = layer.get_submodule(n)
            q, s, dense = fp8_blocks(mod.weight.float(), self.block)
            mod.weight.data.copy_(dense)
            out[n] = {"weight": q, "weight_scale_inv": s}
        return out
