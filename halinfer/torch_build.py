"""Telling MetaX's MACA build of PyTorch from NVIDIA's (vendors/maca.md §1).

Both present device type "cuda" and the torch.cuda API.  No single official
marker exists; these are the ones MetaX's own sources show:
- the version's local tag: mcPytorch appends "+metax<MACA version>"
  (vLLM-metax pins torch==2.10.0+metax3.8.0.7);
- ``torch._utils_internal.USE_MACA``: defined by mcPytorch, absent from stock torch.
"""
from __future__ import annotations

import torch


def maca_markers() -> list[str]:
    """The MACA markers this torch shows (empty for a stock build)."""
    found = []
    if "+metax" in str(torch.__version__):
        found.append(f"version tag ({torch.__version__})")
    try:
        import torch._utils_internal as internal

        if hasattr(internal, "USE_MACA"):
            found.append("torch._utils_internal.USE_MACA")
    except Exception:  # noqa: BLE001
        pass
    return found


def not_maca_reason() -> str | None:
    if getattr(torch.version, "hip", None):
        return f"torch {torch.__version__} is a ROCm build, not MetaX MACA"
    if not maca_markers():
        return (f"torch {torch.__version__} is not a MetaX MACA build (no '+metax' version tag, no "
                "torch._utils_internal.USE_MACA); install MetaX's torch wheel from the MACA SDK")
    return None
