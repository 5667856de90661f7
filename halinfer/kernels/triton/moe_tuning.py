"""Tile configurations of the fused-MoE GEMMs: measured tables per shape and card, else a rule.

A table is a JSON file in ``moe_configs/`` written by ``benchmarks/tune_moe.py``, named
``E{experts}_H{hidden}_I{intermediate}_{dtype}_{card}.json`` (the card name with spaces as
underscores), holding ``{"configs": {"<tokens>": {"BLOCK_M": m, "gemm1": [n, k, warps, stages],
"gemm2": [n, k, warps, stages]}}}``; a step uses the entry of the nearest measured token count.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass

import torch

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moe_configs")


@dataclass(frozen=True)
class GemmTile:
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class MoeConfig:
    block_m: int
    gemm1: GemmTile
    gemm2: GemmTile

    @staticmethod
    def from_json(d: dict) -> "MoeConfig":
        return MoeConfig(int(d["BLOCK_M"]), GemmTile(*map(int, d["gemm1"])), GemmTile(*map(int, d["gemm2"])))

    def to_json(self) -> dict:
        g = lambda t: [t.block_n, t.block_k, t.num_warps, t.num_stages]  # noqa: E731
        return {"BLOCK_M": self.block_m, "gemm1": g(self.gemm1), "gemm2": g(self.gemm2)}


INTERPRETER = MoeConfig(16, GemmTile(32, 32, 1, 1), GemmTile(32, 32, 1, 1))  # small test shapes cross tile edges


SHARED_BUDGET = 160 * 1024   # bytes of shared memory the rule's tiles may use (fits Ampere and Hopper)


def _fit(tile: GemmTile, block_m: int, b_tiles: int, elem: int) -> GemmTile:
    """Fewer pipeline stages, then a shorter K tile, until the stages' A and B tiles fit the budget."""
    n, k, w, s = tile.block_n, tile.block_k, tile.num_warps, tile.num_stages
    while s * (block_m * k + b_tiles * k * n) * elem > SHARED_BUDGET and (s > 2 or k > 32):
        if s > 2:
            s -= 1
        else:
            k //= 2
    return GemmTile(n, k, w, s)


def default_config(num_tokens: int, top_k: int, num_experts: int, elem_size: int = 2) -> MoeConfig:
    """The rule for shapes without a table: BLOCK_M near the mean pairs per expert, so an expert's
    weights are read by as few M-tiles as possible while small steps keep enough programs.
    gemm1 holds two B tiles (gate and up) per stage, gemm2 one."""
    per_expert = num_tokens * top_k / max(1, num_experts)
    if per_expert <= 8:
        cfg = MoeConfig(16, GemmTile(64, 128, 4, 4), GemmTile(64, 128, 4, 4))
    elif per_expert <= 32:
        cfg = MoeConfig(32, GemmTile(64, 128, 4, 4), GemmTile(64, 128, 4, 4))
    elif per_expert <= 96:
        cfg = MoeConfig(64, GemmTile(64, 64, 4, 4), GemmTile(128, 64, 4, 4))
    else:
        cfg = MoeConfig(64, GemmTile(128, 64, 8, 3), GemmTile(128, 64, 8, 3))
    bm = cfg.block_m
    return MoeConfig(bm, _fit(cfg.gemm1, bm, 2, elem_size), _fit(cfg.gemm2, bm, 1, elem_size))


def card_name(device: torch.device) -> str:
    return _card_name(device.type, device.index)


@functools.lru_cache(maxsize=None)
def _card_name(device_type: str, index: int | None) -> str:
    """Asked of the device module once per device: fused_moe looks its table up on every call."""
    if device_type == "cpu":
        return "cpu"
    try:
        name = getattr(torch, device_type).get_device_name(index)
    except Exception:  # noqa: BLE001 - a device module without names: no table applies
        return device_type
    return name.replace(" ", "_")


def table_path(num_experts: int, hidden: int, inter: int, dtype: torch.dtype, card: str) -> str:
    dt = str(dtype).replace("torch.", "")
    return os.path.join(HERE, f"E{num_experts}_H{hidden}_I{inter}_{dt}_{card}.json")


@functools.lru_cache(maxsize=64)
def load_table(path: str) -> dict[int, MoeConfig] | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        raw = json.load(f)["configs"]
    return {int(k): MoeConfig.from_json(v) for k, v in raw.items()}


def pick_config(num_tokens: int, top_k: int, num_experts: int, hidden: int, inter: int, dtype: torch.dtype,
                device: torch.device) -> MoeConfig:
    table = load_table(table_path(num_experts, hidden, inter, dtype, card_name(device)))
    if not table:
        return default_config(num_tokens, top_k, num_experts, dtype.itemsize)
    key = min(table, key=lambda t: abs(math.log(max(t, 1)) - math.log(max(num_tokens, 1))))
    return table[key]
