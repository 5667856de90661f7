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
        self.known: list[str] = []      # every entry point name found, loaded or not
        self.unknown: list[str] = []    # names HALINFER_PLUGINS asks for that no entry point has

    def unknown_error(self) -> str | None:
        """The message for HALINFER_PLUGINS naming plugins that do not exist, or None."""
        if not self.unknown:
            return None
        return (f"{PLUGINS_ENV} names unknown plugin(s): {', '.join(self.unknown)}; "
                f"known plugins: {', '.join(self.known) or 'none'}")

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


def _requested() -> set[str] | None:
    """The plugin names HALINFER_PLUGINS restricts loading to; None: no restriction."""
    names = {s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(",") if s.strip()}
    return names or None


def _dist_name(ep: md.EntryPoint) -> str | None:
    return getattr(getattr(ep, "dist", None), "name", None)


def _hook_backends(pm: pluggy.PluginManager, plugin) -> list:
    """``pm.hook.halinfer_backends()`` answered by ``plugin`` alone: one plugin's failure
    must not hide the others' backends, so each is called through a subset hook caller."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    results = pm.subset_hook_caller("halinfer_backends", remove_plugins=others)()
    return [b for r in results for b in (r or [])]


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
        if not any(impl.plugin is module for impl in pm.hook.halinfer_backends.get_hookimpls()):
            pm.unregister(module)
            rec.error = (f"{ep.value} does not implement the halinfer_backends hook "
                         "(a function of that name marked @halinfer.core.plugin.hookimpl)")
            return rec
        backends = _hook_backends(pm, module)
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
        requested = _requested()
        reg.known = sorted({ep.name for ep in eps})
        reg.unknown = sorted(requested - set(reg.known)) if requested else []
        for ep in eps:
            if requested is not None and ep.name not in requested:
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
