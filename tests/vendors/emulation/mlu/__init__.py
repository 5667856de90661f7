"""Stand-in ``torch_mlu`` and ``torch_mlu_ops`` modules built from the emulated ops."""
from __future__ import annotations

from dataclasses import dataclass

from . import runtime, tmo


@dataclass
class MluConfig:
    device_count: int = 1
    device_name: str = "MLU370"
    torch_mlu_version: str = "1.24.1-torch2.6.0"
    tmo_version: str = "1.12.1+torch2.11"
    total_bytes: int = 48 << 30
    free_bytes: int = 44 << 30


def build_modules(cfg: MluConfig | None = None) -> dict:
    cfg = cfg or MluConfig()
    return {"torch_mlu": runtime.build(cfg), "torch_mlu_ops": tmo.build(cfg)}
