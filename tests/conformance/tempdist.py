"""Installing a plugin distribution into a temporary folder, for a with-block.

Writes ``<name>-0.0.dist-info/{METADATA,entry_points.txt}`` and the plugin's
modules into ``root``, puts ``root`` on sys.path and reloads the plugin
registry; on exit undoes all three (sys.path, the plugin's modules, the
registry), so nothing leaks into other tests.  This is how a vendor's
``pip install halinfer-foo`` looks to the core: a distribution with an entry
point in the ``halinfer.plugins`` group.
"""
from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
from pathlib import Path

from halinfer.core.plugin import ENTRY_POINT_GROUP, load_plugins

HND_PLUGIN_SOURCE = Path(__file__).with_name("hnd_plugin")
HND_DIST, HND_MODULE, HND_NAME = "halinfer-hndsim", "halinfer_hndsim", "hndsim"


@contextlib.contextmanager
def temporary_distribution(root: Path, dist: str, entry_points: dict[str, str], *,
                           modules: dict[str, str] | None = None, packages: dict[str, Path] | None = None):
    """entry_points: name -> "module[:attr]"; modules: file name -> source; packages: name -> folder to copy."""
    root = Path(root)
    info = root / f"{dist.replace('-', '_')}-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for fname, src in (modules or {}).items():
        (root / fname).write_text(src)
    for name, folder in (packages or {}).items():
        shutil.copytree(folder, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield load_plugins(refresh=True)
    finally:
        sys.path.remove(str(root))
        for name, mod in list(sys.modules.items()):
            if str(getattr(mod, "__file__", None) or "").startswith(str(root)):
                del sys.modules[name]
        importlib.invalidate_caches()
        load_plugins(refresh=True)


def hnd_plugin_installed(root: Path):
    """The test-only HND plugin, as distribution halinfer-hndsim with entry point hndsim."""
    return temporary_distribution(root, HND_DIST, {HND_NAME: HND_MODULE}, packages={HND_MODULE: HND_PLUGIN_SOURCE})
