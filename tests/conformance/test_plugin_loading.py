"""Plugin loading: failures are reported with their error while the other plugins
load; a plugin for another contract version is refused naming both versions;
HALINFER_PLUGINS restricts what loads."""
from __future__ import annotations

import sys

import pytest

from halinfer.core.backend import CONTRACT_VERSION
from halinfer.core.device import DeviceError, list_devices, resolve_device
from halinfer.core.plugin import load_plugins

from . import fake_plugins as fp
from .tempdist import temporary_distribution

pytestmark = pytest.mark.usefixtures("unrestricted_plugins")


def _install(tmp_path, **plugins):
    """One distribution with an entry point per keyword: name=source."""
    return temporary_distribution(
        tmp_path, "halinfer-fakes", {name: f"fake_{name}" for name in plugins},
        modules={f"fake_{name}.py": src for name, src in plugins.items()})


def _record(reg, name):
    recs = [r for r in reg.records if r.name == name]
    assert len(recs) == 1, f"expected one record for {name}, got {recs}"
    return recs[0]


def test_a_plugin_whose_import_raises_is_reported_and_the_others_still_load(tmp_path):
    with _install(tmp_path, broken=fp.IMPORT_FAILS, goodvendor=fp.GOOD) as reg:
        rec = _record(reg, "broken")
        assert "RuntimeError" in rec.error and "libfoo.so not found" in rec.error
        assert rec.distribution == "halinfer-fakes" and not rec.backends
        assert reg.find("goodvendor") is not None and reg.find("cpu") is not None
        listed = {d["name"]: d for d in list_devices()}
        assert listed["broken"]["available"] is False and "libfoo.so not found" in listed["broken"]["reason"]
        with pytest.raises(DeviceError, match="broken plugin failed to load.*libfoo.so not found"):
            resolve_device("broken")
        assert resolve_device("goodvendor").backend.name == "goodvendor"


@pytest.mark.parametrize("source,expect", [
    (fp.HOOK_FAILS, "raised ValueError: simulated hook failure"),
    (fp.NOT_A_BACKEND, "returned object, not a halinfer Backend"),
    (fp.NO_HOOK, "does not implement the halinfer_backends hook"),
], ids=["hook_raises", "not_a_backend", "no_hook"])
def test_a_plugin_that_misbehaves_is_reported_with_its_error(tmp_path, source, expect):
    with _install(tmp_path, odd=source) as reg:
        assert expect in _record(reg, "odd").error
        assert reg.find("cpu") is not None


def test_a_plugin_built_for_another_contract_version_is_refused_naming_both(tmp_path):
    with _install(tmp_path, futurevendor=fp.NEWER_CONTRACT) as reg:
        err = _record(reg, "futurevendor").error
        assert f"v{CONTRACT_VERSION + 1}" in err and f"v{CONTRACT_VERSION}" in err and "contract" in err
        assert reg.find("futurevendor") is None
        with pytest.raises(DeviceError) as ei:
            resolve_device("futurevendor")
        assert f"v{CONTRACT_VERSION + 1}" in str(ei.value) and f"v{CONTRACT_VERSION}" in str(ei.value)


def test_an_out_of_tree_plugin_cannot_take_an_in_tree_backend_name(tmp_path):
    # tempdist puts the distribution first on sys.path: the in-tree backend must win anyway.
    with _install(tmp_path, impostor=fp.TAKES_CPU) as reg:
        err = _record(reg, "impostor").error
        assert "'cpu' is already provided by plugin 'cpu' (halinfer)" in err and "HALINFER_PLUGINS" in err
        assert type(reg.find("cpu")).__module__ == "halinfer.plugins.cpu.backend"
        assert resolve_device("cpu").backend is reg.find("cpu")


def test_an_out_of_tree_entry_point_cannot_reuse_an_in_tree_plugin_name(tmp_path):
    with temporary_distribution(tmp_path, "halinfer-fakes", {"cpu": "fake_cpu"},
                                modules={"fake_cpu.py": fp.TAKES_CPU}) as reg:
        clash = [r for r in reg.records if r.name == "cpu" and r.error]
        assert len(clash) == 1 and "already taken by halinfer.plugins.cpu" in clash[0].error
        assert "fake_cpu" not in sys.modules
        assert type(reg.find("cpu")).__module__ == "halinfer.plugins.cpu.backend"


def test_halinfer_plugins_restricts_what_loads(tmp_path):
    with _install(tmp_path, goodvendor=fp.GOOD, broken=fp.IMPORT_FAILS):
        with fp.plugins_env("goodvendor") as reg:
            assert [r.name for r in reg.records] == ["goodvendor"]
            assert "fake_broken" not in sys.modules          # not even imported
            with pytest.raises(DeviceError, match="unknown device 'cpu'"):
                resolve_device("cpu")
        with fp.plugins_env(" cpu , goodvendor ") as reg:
            assert sorted(r.name for r in reg.records) == ["cpu", "goodvendor"]
            assert resolve_device("auto").backend.name == "cpu"   # priority 0 beats -5
        with fp.plugins_env("") as reg:                           # empty: no restriction
            assert {"cpu", "goodvendor", "broken"} <= {r.name for r in reg.records}


def test_the_registry_is_restored_after_a_temporary_plugin(tmp_path):
    before = sorted(r.name for r in load_plugins().records)
    path_before = list(sys.path)
    with _install(tmp_path, goodvendor=fp.GOOD) as reg:
        assert reg.find("goodvendor") is not None
    assert sorted(r.name for r in load_plugins().records) == before
    assert sys.path == path_before and "fake_goodvendor" not in sys.modules


def test_halinfer_plugins_naming_an_unknown_plugin_is_an_error_naming_the_known_ones():
    import subprocess

    with fp.plugins_env("cpu,bogus") as reg:
        err = reg.unknown_error()
        assert err and "bogus" in err and "cpu" in reg.known and all(k in err for k in reg.known)
        with pytest.raises(DeviceError, match="unknown plugin.*bogus"):
            resolve_device("nosuchdevice")
    with fp.plugins_env("cpu") as reg:
        assert reg.unknown_error() is None
    env = dict(__import__("os").environ, HALINFER_PLUGINS="bogus")
    out = subprocess.run([sys.executable, "-m", "halinfer.cli", "devices"], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "bogus" in out.stderr and "cpu" in out.stderr.split("known plugins:")[1]


def test_each_plugins_backends_come_through_the_pluggy_hook(tmp_path, monkeypatch):
    import pluggy

    calls = []
    real = pluggy.PluginManager.subset_hook_caller
    monkeypatch.setattr(pluggy.PluginManager, "subset_hook_caller",
                        lambda self, name, remove_plugins: calls.append(name) or real(self, name, remove_plugins))
    with _install(tmp_path, goodvendor=fp.GOOD, odd=fp.HOOK_FAILS) as reg:
        assert reg.find("goodvendor") is not None and "simulated hook failure" in _record(reg, "odd").error
    assert calls and set(calls) == {"halinfer_backends"}
