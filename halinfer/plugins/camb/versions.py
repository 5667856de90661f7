"""Version requirements of the Cambricon stack, and what is installed.

The operator calls follow the positional prefixes dlinfer uses with
torch_mlu_ops 1.5.0 (pinned there with torch 2.4-2.6); the semantics come from
TMO 1.12.1's docstrings (vendors/camb.md header).  That is the range covered; the
tests emulate both ends, each exporting what its release exports
(tests/vendors/emulation/mlu/tmo_exports.json), and the ops probe what they call (ops.w8a8_api).
"""
from __future__ import annotations

import importlib
import os
import platform
import re

import torch
from torch.torch_version import TorchVersion

TMO_RANGE = (">=1.5.0", "<1.13")
UNTESTED_ENV = "HALINFER_ALLOW_UNTESTED_VERSIONS"


def release(version: str) -> str:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return ".".join(g for g in m.groups() if g is not None) if m else ""


def tmo_problem(version: str) -> str | None:
    lo, hi = TMO_RANGE
    v = TorchVersion(release(version) or "0")
    if (v < lo[2:] or v >= hi[1:]) and os.environ.get(UNTESTED_ENV) != "1":
        return (f"torch_mlu_ops {version} is outside the supported range {lo},{hi} "
                f"(set {UNTESTED_ENV}=1 to try it anyway)")
    return None


def _version_of(module_name: str) -> str:
    try:
        return str(getattr(importlib.import_module(module_name), "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        return f"not importable ({type(e).__name__}: {e})"


def report() -> dict[str, tuple[str, str]]:
    home = os.environ.get("NEUWARE_HOME")
    lo, hi = TMO_RANGE
    return {
        "python": (">=3.10", platform.python_version()),
        "torch": ("== torch_mlu's release", torch.__version__),
        "torch_mlu": ("matching torch", _version_of("torch_mlu")),
        "torch_mlu_ops": (f"{lo},{hi}", _version_of("torch_mlu_ops")),
        "CNToolkit": ("matching torch_mlu", f"installed at {home}" if home else "unknown (NEUWARE_HOME not set)"),
    }
