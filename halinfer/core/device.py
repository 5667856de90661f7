"""Turning a user's ``device=`` string into a Backend and a device index."""
from __future__ import annotations

from .backend import Backend, ResolvedDevice
from .plugin import load_plugins


class DeviceError(ValueError):
    """The device name is unknown, or its plugin is missing or unavailable."""


def _split(spec: str) -> tuple[str, int | None]:
    name, sep, idx = spec.strip().lower().partition(":")
    if not sep:
        return name, None
    if not idx.isdigit():
        raise DeviceError(f"device {spec!r}: the index after ':' must be a non-negative integer")
    return name, int(idx)


def list_devices() -> list[dict]:
    """Every plugin found: its backends with availability and reason, or its load error."""
    reg = load_plugins()
    out = []
    for rec in reg.records:
        if rec.error:
            out.append({"name": rec.name, "available": False, "reason": rec.error, "plugin": rec.target})
        for b in rec.backends:
            d = b.summary()
            d["plugin"] = rec.target
            out.append(d)
    return out


def resolve_device(spec: str | None = "auto") -> ResolvedDevice:
    reg = load_plugins()
    spec = "auto" if spec is None else str(spec)
    name, index = _split(spec)
    if name == "auto":
        if index is not None:
            raise DeviceError("device 'auto' takes no index; name the device, e.g. 'cuda:1'")
        candidates = sorted(reg.backends.values(), key=lambda b: -b.priority)
        reasons = []
        for b in candidates:
            ok, why = b.available()
            if ok:
                return ResolvedDevice(b, None)
            reasons.append(f"{b.name}: {why}")
        raise DeviceError("no backend is available:\n  " + "\n  ".join(reasons))

    backend: Backend | None = reg.find(name)
    if backend is None:
        rec = reg.failed(name)
        if rec is not None:
            raise DeviceError(f"device {spec!r}: the {name} plugin failed to load: {rec.error}")
        known = sorted(set(reg.names()) | {"auto"})
        msg = f"unknown device {spec!r}; known device names: {', '.join(known)}"
        # An alias ("npu", "mlu") is declared by its backend, so a plugin that failed to load
        # cannot claim it: name the failures, or the user never learns why.
        failed = [f"{r.name}: {r.error.splitlines()[0]}" for r in reg.records if r.error]
        if failed:
            msg += "\nplugins that failed to load (the device may belong to one):\n  " + "\n  ".join(failed)
        if reg.unknown_error():
            msg += "\n" + reg.unknown_error()
        raise DeviceError(msg)
    ok, why = backend.available()
    if not ok:
        raise DeviceError(f"device {spec!r} ({backend.name} backend) is not available: {why}")
    if index is not None and index >= backend.device_count():
        raise DeviceError(
            f"device {spec!r}: index {index} out of range, {backend.name} has {backend.device_count()} device(s)"
        )
    return ResolvedDevice(backend, index)
