"""Plugin discovery: pluggy hook specs and loading of the ``halinfer.plugins`` entry points.

A plugin is any importable module (in-tree or from another distribution) that an
entry point in the ``halinfer.plugins`` group names, and that implements the
``halinfer_backends`` hook.  Loading a plugin only imports its module and asks it
for ``Backend`` descriptors: no device is touched until ``Backend.available()``.

A plugin that fails to import, raises from its hook, or was built for another
contract version is recorded with its error and left out; the others load.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import threading
import traceback
from dataclasses import dataclass, field

import pluggy

from .backend import CONTRACT_VERSION, Backend

ENTRY_POINT_GROUP = "halinfer.plugins"
PLUGINS_ENV = "HALINFER_PLUGINS"
IN_TREE_DIST = "halinfer"   # the distribution whose plugins win a backend-name clash

hookspec = pluggy.HookspecMarker("halinfer")
hookimpl = pluggy.HookimplMarker("halinfer")


class HookSpecs:
    @hookspec
    def halinfer_backends(self) -> list[Backend]:
        """Return the Backend descriptors this plugin provides.

        Must be cheap: no device initialisation, no heavy vendor import.  The
        descriptors' ``contract_version`` must equal the core's CONTRACT_VERSION.
        """


@dataclass
class PluginRecord:
    """What happened when one entry point was loaded."""

    name: str
    target: str  # "module" or "module:attr" as the entry point gives it
    distribution: str | None
    backends: list[Backend] = field(default_factory=list)
    error: str | None = None  # set when the plugin could not be used at all


class PluginRegistry:
    def __init__(self) -> None:
        self.records: list[PluginRecord] = []
        self.backends: dict[str, Backend] = {}

    # -- lookup -------------------------------------------------------------
    def names(self) -> list[str]:
        """Every device name and alias a loaded or failed plugin answers to."""
        out: list[str] = []
        for b in self.backends.values():
            out += [b.name, *b.aliases]
        for r in self.records:
            if r.error and r.name not in out:
                out.append(r.name)
        return out

    def find(self, name: str) -> Backend | None:
        for b in self.backends.values():
            if name == b.name or name in b.aliases:
                return b
        return None

    def failed(self, name: str) -> PluginRecord | None:
        for r in self.records:
            if r.error and r.name == name:
                return r
        return None


def _allowed(name: str) -> bool:
    only = os.environ.get(PLUGINS_ENV, "").strip()
    if not only:
        return True
    return name in {s.strip() for s in only.split(",") if s.strip()}


def _dist_name(ep: md.EntryPoint) -> str | None:
    return getattr(getattr(ep, "dist", None), "name", None)


def _load_entry_point(ep: md.EntryPoint, pm: pluggy.PluginManager) -> PluginRecord:
    dist = _dist_name(ep)
    rec = PluginRecord(name=ep.name, target=ep.value, distribution=dist)
    try:
        module = ep.load()
    except Exception as e:  # noqa: BLE001 - any import failure is reported, never raised
        rec.error = f"import of {ep.value} failed: {type(e).__name__}: {e}"
        return rec
    try:
        pm.register(module, name=f"{ep.name}:{ep.value}")
        impl = getattr(module, "halinfer_backends", None)
        if impl is None:
            rec.error = f"{ep.value} does not implement the halinfer_backends hook"
            return rec
        backends = list(impl() or [])
    except Exception as e:  # noqa: BLE001
        tb = traceback.format_exc(limit=3)
        rec.error = f"halinfer_backends() of {ep.value} raised {type(e).__name__}: {e}\n{tb}"
        return rec
    for b in backends:
        if not isinstance(b, Backend):
            rec.error = f"{ep.value} returned {type(b).__name__}, not a halinfer Backend"
            return rec
        if b.contract_version != CONTRACT_VERSION:
            rec.error = (
                f"plugin {ep.name!r} ({dist or ep.value}) was built for halinfer plugin contract "
                f"v{b.contract_version}, this halinfer speaks v{CONTRACT_VERSION}; "
                f"install a {ep.name} plugin built for contract v{CONTRACT_VERSION}"
            )
            return rec
    rec.backends = backends
    return rec


_lock = threading.Lock()
_registry: PluginRegistry | None = None


def load_plugins(refresh: bool = False) -> PluginRegistry:
    """Load (once) every allowed ``halinfer.plugins`` entry point."""
    global _registry
    with _lock:
        if _registry is not None and not refresh:
            return _registry
        importlib.invalidate_caches()
        pm = pluggy.PluginManager("halinfer")
        pm.add_hookspecs(HookSpecs)
        reg = PluginRegistry()
        seen: set[str] = set()
        # In-tree plugins first, so a clash of backend names does not depend on sys.path order:
        # another distribution cannot silently take over "cpu" (HALINFER_PLUGINS can choose).
        eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: _dist_name(ep) != IN_TREE_DIST)
        for ep in eps:
            if not _allowed(ep.name):
                continue
            if ep.name in seen:
                # An editable install can list the same entry point twice; another target is a clash.
                first = next(r for r in reg.records if r.name == ep.name)
                if ep.value != first.target:
                    reg.records.append(PluginRecord(
                        ep.name, ep.value, _dist_name(ep),
                        error=f"plugin name {ep.name!r} is already taken by {first.target} ({first.distribution})"))
                continue
            seen.add(ep.name)
            rec = _load_entry_point(ep, pm)
            reg.records.append(rec)
            for b in rec.backends:
                if b.name in reg.backends:
                    owner = next(r for r in reg.records if reg.backends[b.name] in r.backends)
                    rec.error = (f"backend name {b.name!r} is already provided by plugin {owner.name!r} "
                                 f"({owner.distribution}); set {PLUGINS_ENV} to choose one")
                    continue
                reg.backends[b.name] = b
        _registry = reg
        return reg
