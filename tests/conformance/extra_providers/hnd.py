"""The test-only HND plugin (../hnd_plugin) as a conformance provider.

It is installed from a temporary distribution and found through its entry point
and ``resolve_device``, as a vendor plugin would be; the registry is restored
before any test runs (the backend object stays usable)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from halinfer.core.device import DeviceError, resolve_device
from halinfer.core.plugin import PLUGINS_ENV

from ..providers import Provider, from_backend
from ..tempdist import HND_NAME, hnd_plugin_installed


def providers() -> list[Provider]:
    root = Path(tempfile.mkdtemp(prefix="halinfer-hndsim-"))
    try:
        with hnd_plugin_installed(root / "site"):
            try:
                backend = resolve_device(HND_NAME).backend
            except DeviceError as e:
                why = str(e).splitlines()[0]
                if os.environ.get(PLUGINS_ENV):
                    why = f"{PLUGINS_ENV}={os.environ[PLUGINS_ENV]} leaves it out ({why})"
                return [Provider(HND_NAME, unavailable=why)]
            return [from_backend(backend)]   # touches backend.ops while the plugin is importable
    finally:
        shutil.rmtree(root, ignore_errors=True)
