"""What the MACA stack needs, and what is installed (for `halinfer doctor`).

MetaX ships torch, triton and flash_attn builds tagged "+metax<MACA version>"
(vLLM-metax pins torch==2.10.0+metax3.8.0.7, triton==3.6.0+metax3.8.0.7,
flash_attn==2.6.3+metax3.8.0.7torch2.10) and mcoplib; mcPytorch exists from the
PyTorch 2.4 port on (vendors/maca.md §1-§2).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform

import torch


def _dist(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def report() -> dict[str, tuple[str, str]]:
    return {
        "python": (">=3.10", platform.python_version()),
        "torch": (">=2.4, a +metax build", torch.__version__),
        "triton": ("a +metax build", _dist("triton")),
        "flash_attn": (">=2.6, a +metax build", _dist("flash_attn")),
        "mcoplib": ("any (schemas probed)", _dist("mcoplib")),
        "MACA SDK": ("matching torch's +metax tag", os.environ.get("MACA_PATH") or "unknown (MACA_PATH not set)"),
    }
