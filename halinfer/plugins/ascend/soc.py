"""Ascend SoC variants: which chip is this, and what halinfer does on it.

``torch.npu.get_soc_version()`` returns a value of torch_npu's ``enum class SocVersion``
and ``torch.npu.get_device_name()`` the SoC name (vendors/ascend.md §1).  SOC_VERSIONS
is that enum as Ascend/pytorch ``torch_npu/csrc/core/npu/NpuVariables.h`` defines it
(v2.5.1-7.0.0 f1826dc29 through master 9e73e708a, which adds 256 Ascend910_9363 and
260 Ascend950).  The version number is preferred; the name is the fallback for builds
that lack ``get_soc_version``, matched exactly (``"Ascend910B"`` is the first-generation
910, value 104, not an Atlas A2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

A2, A3, P310, A950, A910, P310B, UNKNOWN = "A2", "A3", "310P", "950", "910", "310B", "unknown"

# The product names the seed's support table uses for each variant.
PRODUCT = {
    A2: "Atlas 800T A2",
    A3: "Atlas 800T A3",
    P310: "Atlas 300I Duo",
    A950: "Ascend 950",
    A910: "Ascend 910 (first generation)",
    P310B: "Ascend 310B",
    UNKNOWN: "unknown Ascend SoC",
}

# enum SocVersion (NpuVariables.h): value -> (name, variant)
SOC_VERSIONS = {
    100: ("Ascend910PremiumA", A910), 101: ("Ascend910ProA", A910), 102: ("Ascend910A", A910),
    103: ("Ascend910ProB", A910), 104: ("Ascend910B", A910),
    200: ("Ascend310P1", P310), 201: ("Ascend310P2", P310), 202: ("Ascend310P3", P310),
    203: ("Ascend310P4", P310), 204: ("Ascend310P5", P310), 205: ("Ascend310P7", P310),
    220: ("Ascend910B1", A2), 221: ("Ascend910B2", A2), 222: ("Ascend910B2C", A2), 223: ("Ascend910B3", A2),
    224: ("Ascend910B4", A2), 225: ("Ascend910B4_1", A2),
    240: ("Ascend310B1", P310B), 241: ("Ascend310B2", P310B), 242: ("Ascend310B3", P310B),
    243: ("Ascend310B4", P310B),
    250: ("Ascend910_9391", A3), 251: ("Ascend910_9392", A3), 252: ("Ascend910_9381", A3),
    253: ("Ascend910_9382", A3), 254: ("Ascend910_9372", A3), 255: ("Ascend910_9362", A3),
    256: ("Ascend910_9363", A3),
    260: ("Ascend950", A950),
}
# get_device_name() spells the enum's "_1" suffix as "-1" ("Ascend910B4-1", vendors/ascend.md §1)
_BY_NAME = {n: v for n, v in SOC_VERSIONS.values()} | {"Ascend910B4-1": A2}


def classify(version: int | None, name: str | None) -> str:
    if version is not None and version in SOC_VERSIONS:
        return SOC_VERSIONS[version][1]
    name = name or ""
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("Ascend950"):     # Ascend950PR / Ascend950DT
        return A950
    return UNKNOWN


@dataclass(frozen=True)
class SocProfile:
    """What one variant supports in this plugin.

    attention   "fia": npu_fused_infer_attention_score (A2/A3; FIA's docs list
                only those), "atb": ATB _npu_paged_attention/_npu_flash_attention
                (310P, where FIA and aclgraph task updates are not offered).
    graph_modes 310P is graph-only for decode (lmdeploy: "300I Duo graph mode only").
    kv_layout   "NHD" (A2/A3 ND caches) or "NZ": the 310P's FRACTAL_NZ caches
                (num_blocks, kv_heads*head_dim/16, block_size, 16) (nz.py).
    block_sizes 310P: ATB paged attention takes block_size % 16 == 0, <= 128 (and
                block_size * head_dim <= 128*128, checked per layer in nz.py).
    """

    variant: str
    dtypes: tuple[torch.dtype, ...]
    graph_modes: tuple[str, ...]
    weight_quant: tuple[str, ...]
    attention: str
    fused_swiglu: bool      # npu_swiglu; 310P computes silu(gate) * up instead (dlinfer)
    kv_layout: str = "NHD"
    block_sizes: tuple[int, ...] = (128, 256, 512)


PROFILES = {
    A2: SocProfile(A2, (torch.float16, torch.bfloat16), ("eager", "graph"), ("awq", "w8a8"), "fia", True),
    A3: SocProfile(A3, (torch.float16, torch.bfloat16), ("eager", "graph"), ("awq", "w8a8"), "fia", True),
    # 310P has no bf16; W8A8 there is a different (static) scheme this plugin does not implement.
    P310: SocProfile(P310, (torch.float16,), ("graph",), (), "atb", False, "NZ", (16, 32, 64, 128)),
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
