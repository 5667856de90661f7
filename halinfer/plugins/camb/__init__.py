"""The Cambricon plugin: MLUs through torch_mlu and torch_mlu_ops.

Registered through the ``halinfer.plugins`` entry point group like any
out-of-tree plugin.  Loading it imports no vendor library and touches no device.
"""
from __future__ import annotations

from halinfer.core.plugin import hookimpl

from .backend import CambBackend


@hookimpl
def halinfer_backends():
    return [CambBackend()]
