"""The CUDA plugin: Triton kernels + CUDA graphs for NVIDIA GPUs.

Registered through the ``halinfer.plugins`` entry point group like any
out-of-tree plugin.  Loading it is cheap: no triton import, no CUDA call.
"""
from __future__ import annotations

from halinfer.core.plugin import hookimpl

from .backend import CudaBackend


@hookimpl
def halinfer_backends():
    return [CudaBackend()]
