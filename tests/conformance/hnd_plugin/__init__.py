"""halinfer-hndsim: a test-only vendor plugin.

Its device keeps the KV cache in the (heads, block, head_dim) layout ("HND"),
its attention reads int32 sequence lengths from the host, and it builds its own
attention metadata.  The conformance suite installs it from a temporary
distribution (tests/conformance/tempdist.py), exactly as a vendor package would
be installed, and runs every op test against it: the proof that such a device
plugs in without a change to the core.
"""
from __future__ import annotations

from halinfer.core.plugin import hookimpl

from .backend import HndBackend


@hookimpl
def halinfer_backends():
    return [HndBackend()]
