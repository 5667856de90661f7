"""Device strings: cpu / cpu:0 / auto resolve; unknown names list the known ones;
a known device whose backend is unavailable is refused with the backend's reason;
the vendor names (cuda, npu, ascend, mlu, camb, maca) are refused here with the
reason of their plugin."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import halinfer.plugins
from halinfer.core.device import DeviceError, resolve_device
from halinfer.core.plugin import load_plugins

from . import fake_plugins as fp
from .tempdist import temporary_distribution

pytestmark = pytest.mark.usefixtures("unrestricted_plugins")

PLUGIN_DIR = Path(halinfer.plugins.__path__[0])


def test_cpu_device_strings_resolve():
    for spec, index in (("cpu", None), ("cpu:0", 0), (" CPU ", None)):
        r = resolve_device(spec)
        assert r.backend.name == "cpu" and r.index == index, spec
        assert r.torch_device == torch.device("cpu") if index is None else torch.device("cpu", 0)


@pytest.mark.parametrize("spec,match", [("cpu:1", "out of range"), ("cpu:x", "non-negative integer"),
                                        ("cpu:-1", "non-negative integer"), ("auto:0", "takes no index")])
def test_malformed_or_out_of_range_device_strings_are_refused(spec, match):
    with pytest.raises(DeviceError, match=match):
        resolve_device(spec)


def test_auto_picks_the_available_backend_of_highest_priority():
    r = resolve_device("auto")
    assert r.backend.available()[0]
    for b in load_plugins().backends.values():
        if b.available()[0]:
            assert b.priority <= r.backend.priority, f"{b.name} outranks {r.backend.name}"
    assert resolve_device(None).backend is r.backend


def test_unknown_device_error_lists_the_known_names():
    with pytest.raises(DeviceError) as ei:
        resolve_device("tpu:0")
    msg = str(ei.value)
    assert "unknown device 'tpu:0'" in msg
    for name in set(load_plugins().names()) | {"auto", "cpu"}:
        assert name in msg


def test_a_known_device_whose_backend_is_unavailable_is_refused_with_its_reason(tmp_path):
    with temporary_distribution(tmp_path, "halinfer-offline", {"offline": "fake_offline"},
                                modules={"fake_offline.py": fp.OFFLINE}):
        for spec in ("offline", "offl:0", "OFFLINE"):
            with pytest.raises(DeviceError) as ei:
                resolve_device(spec)
            assert fp.OFFLINE_REASON in str(ei.value) and "not available" in str(ei.value), spec
        # auto passes over it despite its priority 1000 ...
        assert resolve_device("auto").backend.name != "offline"
        # ... and when nothing else is allowed, says why nothing is available.
        with fp.plugins_env("offline"):
            with pytest.raises(DeviceError, match="no backend is available") as ei:
                resolve_device("auto")
            assert fp.OFFLINE_REASON in str(ei.value)


# On this machine only the CPU is available.  Each vendor plugin is either in the
# tree (then it must load, and its refusal carries its available() reason) or not
# yet (then the refusal must still name its plugin's load error).
VENDOR_SPECS = [("cuda", "cuda"), ("cuda:1", "cuda"), ("npu", "ascend"), ("ascend:0", "ascend"),
                ("mlu", "camb"), ("camb", "camb"), ("maca", "maca")]


@pytest.mark.parametrize("spec,plugin", VENDOR_SPECS, ids=[s for s, _ in VENDOR_SPECS])
def test_vendor_device_strings_are_refused_with_their_plugins_reason(spec, plugin):
    reg = load_plugins()
    name = spec.partition(":")[0]
    backend = reg.find(name)
    if (PLUGIN_DIR / plugin / "__init__.py").exists():
        rec = next((r for r in reg.records if r.name == plugin), None)
        assert backend is not None and backend.name == plugin, \
            f"the in-tree {plugin} plugin did not load: {rec.error if rec else 'no entry point'}"
        ok, why = backend.available()
        if ok:   # a machine that has this device: resolution works, or the index is out of range
            try:
                assert resolve_device(spec).backend is backend
            except DeviceError as e:
                assert "out of range" in str(e)
            return
        assert why and why != "ok"
        with pytest.raises(DeviceError) as ei:
            resolve_device(spec)
        assert why in str(ei.value) and plugin in str(ei.value)
    else:
        rec = next((r for r in reg.records if r.name == plugin and r.error), None)
        assert rec is not None, f"no {plugin} plugin in the tree, yet no load error was recorded"
        with pytest.raises(DeviceError) as ei:
            resolve_device(spec)
        assert rec.error.splitlines()[0] in str(ei.value)
