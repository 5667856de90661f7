"""Rotary embedding tables: inverse frequencies for every scaling type HF uses, and
the per-position float32 cos/sin cache that ``Ops.rotary`` consumes.

Scaling types: default, linear, dynamic (NTK), llama3, yarn, longrope (and "su",
its old name).  Dynamic and longrope change with sequence length in HF; a cache
row must not, so row p uses the frequencies HF uses when the longest position
is p: below the original context both equal HF exactly; past it, each new
position is rotated as HF rotates the newest token during decoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RopeSpec:
    rotary_dim: int
    base: float = 10000.0
    rope_type: str = "default"
    params: dict | None = None        # the rope_scaling / rope_parameters dict
    max_position: int = 2048          # the model's max_position_embeddings
    is_neox: bool = True


def _base_inv_freq(dim: int, base: float) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).double() / dim))


def _llama3(inv_freq, p):
    factor = p["factor"]
    low, high = p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
    old_ctx = p["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn_mscale(scale: float, m: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def _yarn(dim, base, p, max_position):
    factor = p["factor"]
    orig = p.get("original_max_position_embeddings") or max_position
    if p.get("original_max_position_embeddings"):
        # DeepSeek-style configs keep the pretrained length apart; HF derives the factor from it.
        factor = max_position / orig
    attn = p.get("attention_factor")
    if attn is None:
        m, m_all = p.get("mscale"), p.get("mscale_all_dim")
        attn = _yarn_mscale(factor, m) / _yarn_mscale(factor, m_all) if (m and m_all) else _yarn_mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def corr_dim(rot):
        return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

    lo, hi = corr_dim(beta_fast), corr_dim(beta_slow)
    if p.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - lo) / (hi - lo)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.int64).double() / dim)
    extrap, interp = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp
    return interp * (1 - keep) + extrap * keep, float(attn)


def _longrope_parts(dim, base, p, max_position):
    orig = p.get("original_max_position_embeddings") or max_position
    factor = p.get("factor") or 1.0
    if p.get("original_max_position_embeddings"):
        factor = max_position / orig
    attn = p.get("attention_factor")
    if attn is None:
        attn = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    shape = torch.arange(0, dim, 2, dtype=torch.int64).double() / dim
    short = 1.0 / (torch.tensor(p["short_factor"], dtype=torch.float64) * base ** shape)
    long = 1.0 / (torch.tensor(p["long_factor"], dtype=torch.float64) * base ** shape)
    return short, long, orig, float(attn)


def inv_freq_and_scale(spec: RopeSpec) -> tuple[torch.Tensor, float]:
    """float64 inverse frequencies [rotary_dim/2] and the cos/sin multiplier, for the
    model's nominal context (dynamic/longrope: the short-context variant)."""
    p, dim, base = spec.params or {}, spec.rotary_dim, spec.base
    t = spec.rope_type
    inv = _base_inv_freq(dim, base)
    if t in ("default", "dynamic"):
        return inv, 1.0
    if t == "linear":
        return inv / p["factor"], 1.0
    if t == "llama3":
        return _llama3(inv, p), 1.0
    if t == "yarn":
        return _yarn(dim, base, p, spec.max_position)
    if t in ("longrope", "su"):
        short, _, _, attn = _longrope_parts(dim, base, p, spec.max_position)
        return short, attn
    raise ValueError(f"unsupported rope type {t!r}; supported: default, linear, dynamic, llama3, yarn, longrope")


def build_cos_sin_cache(spec: RopeSpec, max_len: int, device=None) -> torch.Tensor:
    """float32 [max_len, rotary_dim]: cos in the first half of the columns, sin in the second."""
    inv, scale = inv_freq_and_scale(spec)
    pos = torch.arange(max_len, dtype=torch.float64)
    freqs = pos[:, None] * inv[None, :]
    p = spec.params or {}
    if spec.rope_type == "dynamic":
        orig = p.get("original_max_position_embeddings") or spec.max_position
        if max_len > orig:
            dim, factor = spec.rotary_dim, p["factor"]
            seq = torch.arange(orig, max_len, dtype=torch.float64) + 1
            base = spec.base * ((factor * seq / orig) - (factor - 1)) ** (dim / (dim - 2))
            ar = torch.arange(0, dim, 2, dtype=torch.int64).double() / dim
            inv_long = 1.0 / (base[:, None] ** ar[None, :])
            freqs[orig:] = (seq - 1)[:, None] * inv_long
    elif spec.rope_type in ("longrope", "su"):
        _, long, orig, _ = _longrope_parts(spec.rotary_dim, spec.base, p, spec.max_position)
        if max_len > orig:
            freqs[orig:] = pos[orig:, None] * long[None, :]
    cache = torch.cat((freqs.cos() * scale, freqs.sin() * scale), dim=-1).float()
    return cache if device is None else cache.to(device)
