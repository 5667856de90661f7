"""W8A8 with SmoothQuant (Xiao et al., 2022) smoothing, written as compressed-tensors
``int-quantized``.

Smoothing moves activation outliers into the weights: for the linears after an RMSNorm
(q/k/v and gate/up), s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (alpha = 0.5; max|W_j| over
all linears of the group), the norm weight is divided by s and each weight's column j
multiplied by s_j: the float model is unchanged.  o_proj and down_proj are not smoothed
(no norm before them), as in the paper.  Then every projection gets int8 weights,
symmetric per output channel, scale = max|w_row| / 127; the activations are quantized
per token at run time (dynamic), so nothing about them is stored.  lm_head stays dense.
"""
from __future__ import annotations

import torch

from .capture import GROUPS, LINEARS

SMOOTHED = ("attn_in", "mlp_in")


def smooth_scale(x: torch.Tensor, weights: list[torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    a = x.abs().amax(0).float()
    w = torch.cat([w.abs() for w in weights]).amax(0).float()
    s = a.clamp(min=1e-5).pow(alpha) / w.clamp(min=1e-5).pow(1 - alpha)
    return torch.where((a > 0) & (w > 0), s, torch.ones_like(s))  # a channel never used keeps scale 1


def int8_per_channel(w: torch.Tensor):
    """(int8 [N, K], float32 scale [N, 1], dense [N, K])."""
    s = (w.abs().amax(1, keepdim=True) / 127).clamp(min=1e-8)
    q = torch.round(w / s).clamp(-127, 127)
    return q.to(torch.int8), s, q * s


class W8A8:
    name = "w8a8"
    needs_calibration = True

    def __init__(self, alpha: float = 0.5, **_):
        self.alpha = alpha

    def config(self) -> dict:
        def args(strategy, dynamic, observer):
            return {"num_bits": 8, "type": "int", "symmetric": True, "strategy": strategy, "dynamic": dynamic,
                    "group_size": None, "block_structure": None, "actorder": None, "observer": observer,
                    "observer_kwargs": {}}

        return {"quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
                "ignore": ["lm_head"], "kv_cache_scheme": None,
                "config_groups": {"group_0": {"targets": ["Linear"], "format": "int-quantized",
                                              "weights": args("channel", False, "minmax"),
                                              "input_activations": args("token", True, None),
                                              "output_activations": None}}}

    @torch.no_grad()
    def quantize_layer(self, layer, inputs: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        for g in SMOOTHED:
            prev, names = GROUPS[g]
            mods = [layer.get_submodule(n) for n in names]
            s = smooth_scale(inputs[g], [m.weight for m in mods], self.alpha)
            layer.get_submodule(prev).weight.data /= s
            for m in mods:
                m.weight.data *= s[None, :]
        out = {}
        for n in LINEARS:
            mod = layer.get_submodule(n)
            q, s, dense = int8_per_channel(mod.weight.float())
            mod.weight.data.copy_(dense)
            out[n] = {"weight": q, "weight_scale": s}
        return out
