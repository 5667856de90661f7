"""The MetaX MACA plugin: MetaX GPUs (C500, C600) through MetaX's CUDA-compatible PyTorch.

Registered through the ``halinfer.plugins`` entry point group like any
out-of-tree plugin.  Loading it imports no vendor library and touches no device.
"""
from __future__ import annotations

from halinfer.core.plugin import hookimpl

from .backend import MacaBackend


@hookimpl
def halinfer_backends():
    return [MacaBackend()]
