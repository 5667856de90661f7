"""Ascend SoC variants: which chip is this, and what halinfer does on it.

Facts (vendors/ascend.md §1): ``torch.npu.get_soc_version()`` returns an int
(220-225 Atlas A2 / 910B, 250-256 Atlas A3 / 910_93, 200-205 310P, 260
Ascend950) and ``torch.npu.get_device_name()`` the SoC name ("Ascend910B2",
"Ascend910_9391", "Ascend310P3").  The version number is preferred; the name
is the fallback for builds that lack ``get_soc_version``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

A2, A3, P310, A950, UNKNOWN = "A2", "A3", "310P", "950", "unknown"

# The product names the seed's support table uses for each variant.
PRODUCT = {
    A2: "Atlas 800T A2",
    A3: "Atlas 800T A3",
    P310: "Atlas 300I Duo",
    A950: "Ascend 950",
    UNKNOWN: "unknown Ascend SoC",
}


def classify(version: int | None, name: str | None) -> str:
    if version is not None:
        if 220 <= version <= 225:
            return A2
        if 250 <= version <= 256:
            return A3
        if 200 <= version <= 205:
            return P310
        if version == 260:
            return A950
    name = name or ""
    if name.startswith("Ascend910B"):
        return A2
    if name.startswith("Ascend910_93"):
        return A3
    if name.startswith("Ascend310P"):
        return P310
    return UNKNOWN


@dataclass(frozen=True)
class SocProfile:
    """What one variant supports in this plugin.

    attention   "fia": npu_fused_infer_attention_score (A2/A3; FIA's docs list
                only those), "atb": ATB _npu_paged_attention/_npu_flash_attention
                (310P, where FIA and aclgraph task updates are not offered).
    graph_modes 310P is graph-only for decode (lmdeploy: "300I Duo graph mode only").
    """

    variant: str
    dtypes: tuple[torch.dtype, ...]
    graph_modes: tuple[str, ...]
    weight_quant: tuple[str, ...]
    attention: str
    fused_swiglu: bool      # npu_swiglu; 310P computes silu(gate) * up instead (dlinfer)


PROFILES = {
    A2: SocProfile(A2, (torch.float16, torch.bfloat16), ("eager", "graph"), ("awq", "w8a8"), "fia", True),
    A3: SocProfile(A3, (torch.float16, torch.bfloat16), ("eager", "graph"), ("awq", "w8a8"), "fia", True),
    # 310P has no bf16; W8A8 there is a different (static) scheme this plugin does not implement.
    P310: SocProfile(P310, (torch.float16,), ("graph",), (), "atb", False),
}


@dataclass(frozen=True)
class Soc:
    variant: str
    name: str
    version: int | None

    @property
    def product(self) -> str:
        return PRODUCT[self.variant]

    @property
    def profile(self) -> SocProfile | None:
        return PROFILES.get(self.variant)


def detect(npu_module) -> Soc:
    """Read the SoC of the current device through ``torch_npu.npu`` (never raises)."""
    version = name = None
    try:
        version = int(npu_module.get_soc_version())
    except Exception:  # noqa: BLE001 - older torch_npu: fall back to the name
        version = None
    try:
        name = str(npu_module.get_device_name())
    except Exception:  # noqa: BLE001
        name = None
    return Soc(classify(version, name), name or "?", version)
