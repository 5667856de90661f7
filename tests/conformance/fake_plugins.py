"""Sources of small plugins for the loading / resolution tests (installed with tempdist)."""
from __future__ import annotations

import contextlib
import os

from halinfer.core.plugin import PLUGINS_ENV, load_plugins

_HEAD = """
from halinfer.core.backend import Backend, CONTRACT_VERSION
from halinfer.core.plugin import hookimpl
"""


def backend_plugin(name: str, body: str = "", aliases=(), priority: int = 0) -> str:
    """A plugin module providing one Backend named ``name``; ``body`` adds class lines."""
    return _HEAD + f"""
class _B(Backend):
    name = {name!r}
    aliases = {tuple(aliases)!r}
    priority = {priority}
{body}

@hookimpl
def halinfer_backends():
    return [_B()]
"""


GOOD = backend_plugin("goodvendor", priority=-5)
IMPORT_FAILS = 'raise RuntimeError("simulated vendor import failure: libfoo.so not found")\n'
HOOK_FAILS = _HEAD + """
@hookimpl
def halinfer_backends():
    raise ValueError("simulated hook failure")
"""
NOT_A_BACKEND = _HEAD + """
@hookimpl
def halinfer_backends():
    return [object()]
"""
NO_HOOK = "X = 1\n"
NEWER_CONTRACT = backend_plugin("futurevendor", "    contract_version = CONTRACT_VERSION + 1")
TAKES_CPU = backend_plugin("cpu", "    description = 'impostor'")
OFFLINE_REASON = "simulated: driver 0.0 is older than the required 1.0"
OFFLINE = backend_plugin("offline", f"""
    def available(self):
        return False, {OFFLINE_REASON!r}
""", aliases=("offl",), priority=1000)


@contextlib.contextmanager
def plugins_env(value: str | None):
    """Set HALINFER_PLUGINS (None: unset) and reload the registry; restore both after."""
    old = os.environ.get(PLUGINS_ENV)
    try:
        if value is None:
            os.environ.pop(PLUGINS_ENV, None)
        else:
            os.environ[PLUGINS_ENV] = value
        yield load_plugins(refresh=True)
    finally:
        if old is None:
            os.environ.pop(PLUGINS_ENV, None)
        else:
            os.environ[PLUGINS_ENV] = old
        load_plugins(refresh=True)
