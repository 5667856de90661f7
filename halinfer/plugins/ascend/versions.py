"""Version requirements of the Ascend stack, and what is installed (for `halinfer doctor`).

The range is the one the fact sheet's sources cover (vendors/ascend.md header):
dlinfer pins torch/torch-npu >=2.3.1,<2.10, and this plugin relies on the FIA
TND layout and aclgraph task updates documented for the 2.5.1-7.x branches on.
Every release branch in the range (v2.5.1-7.0.0 .. v2.9.0-26.1.0) is emulated with its
pinned op-plugin's schemas (tests/vendors/emulation/npu/releases.json); where they
differ the plugin probes the op (features.py) instead of reading this version.
torch_npu is built for exactly one torch release: their versions must agree.
"""
from __future__ import annotations

import importlib
import os
import platform
import re

import torch
from torch.torch_version import TorchVersion

TORCH_NPU_RANGE = (">=2.5.1", "<2.10")
PYTHON_MIN = "3.10"
UNTESTED_ENV = "HALINFER_ALLOW_UNTESTED_VERSIONS"   # "1": run outside the range above anyway


def release(version: str) -> str:
    """'2.5.1.post1+cpu' -> '2.5.1' (the torch release a torch_npu build targets)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return ".".join(g for g in m.groups() if g is not None) if m else ""


def in_range(version: str, lo: str, hi: str) -> bool:
    v = TorchVersion(release(version) or "0")
    return v >= lo.lstrip(">=") and v < hi.lstrip("<")


def installed_torch() -> str:
    """torch's version (a function: the emulation tests stand in another release's torch)."""
    return torch.__version__


def torch_npu_problem(npu_version: str) -> str | None:
    """Why this torch / torch_npu pair is not one halinfer supports, or None."""
    if release(npu_version) != release(installed_torch()):
        return (f"torch_npu {npu_version} is built for torch {release(npu_version)}, but torch "
                f"{installed_torch()} is installed; install the torch release torch_npu names")
    lo, hi = TORCH_NPU_RANGE
    if not in_range(npu_version, lo, hi) and os.environ.get(UNTESTED_ENV) != "1":
        return (f"torch_npu {npu_version} is outside the supported range {lo},{hi} "
                f"(set {UNTESTED_ENV}=1 to try it anyway)")
    return None


def cann_version(torch_npu) -> str:
    """CANN's version as torch_npu reports it ('' before CANN 8.1.RC1)."""
    try:
        v = torch_npu.utils.get_cann_version(module="CANN")
        if v:
            return str(v)
    except Exception:  # noqa: BLE001 - older torch_npu has no get_cann_version
        pass
    home = os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH")
    return f"unknown (toolkit at {home})" if home else "unknown (CANN set_env.sh not sourced?)"


def report(atb_state: str, op_features: str = "") -> dict[str, tuple[str, str]]:
    try:
        npu = importlib.import_module("torch_npu")
        npu_v = str(getattr(npu, "__version__", "?"))
        cann = cann_version(npu)
    except Exception as e:  # noqa: BLE001
        npu_v, cann = f"not importable ({type(e).__name__}: {e})", "unknown"
    lo, hi = TORCH_NPU_RANGE
    return {
        "python": (f">={PYTHON_MIN}", platform.python_version()),
        "torch": ("== torch_npu's release", installed_torch()),
        "torch_npu": (f"{lo},{hi}", npu_v),
        "CANN": ("per torch_npu's release notes", cann),
        "NNAL (ATB ops)": ("installed, set_env.sh sourced", atb_state),
        "op-plugin ops": ("probed (features.py); each missing one has a fallback", op_features),
    }
