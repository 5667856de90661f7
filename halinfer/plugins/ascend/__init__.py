"""The Ascend plugin: Huawei Ascend NPUs through torch_npu (A2, A3, 300I Duo).

Registered through the ``halinfer.plugins`` entry point group like any
out-of-tree plugin.  Loading it imports no vendor library and touches no device.
"""
from __future__ import annotations

from halinfer.core.plugin import hookimpl

from .backend import AscendBackend


@hookimpl
def halinfer_backends():
    return [AscendBackend()]
