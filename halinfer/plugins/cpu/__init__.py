"""The CPU reference backend: the core's torch operators, always available."""
from __future__ import annotations

from halinfer.core.plugin import hookimpl

from .backend import CpuBackend


@hookimpl
def halinfer_backends():
    return [CpuBackend()]
