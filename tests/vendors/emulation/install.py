"""Putting stand-in vendor modules into ``sys.modules`` (and attributes onto
torch) for the duration of a ``with`` block, then restoring what was there."""
from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys
import types

_MISSING = object()


def settle_transformers_probes() -> None:
    """transformers asks once per process (and caches) whether torch_npu, torch_mlu or
    flash_attn exist; ask before any stand-in module is installed, so the HF reference
    never believes in an emulated library."""
    try:
        import accelerate  # noqa: F401 - probes torch_npu through find_spec at import (state.py)
    except Exception:  # noqa: BLE001
        pass
    try:
        import transformers.modeling_flash_attention_utils  # noqa: F401
        import transformers.utils.import_utils as iu
        from transformers import AutoModelForCausalLM  # noqa: F401
    except Exception:  # noqa: BLE001 - no transformers: nothing to settle
        return
    for name in ("is_torch_npu_available", "is_torch_mlu_available", "is_flash_attn_2_available",
                 "is_flash_attn_3_available", "is_flash_attn_4_available"):
        fn = getattr(iu, name, None)
        if fn is not None:
            fn()


@contextlib.contextmanager
def installed(modules: dict[str, types.ModuleType], attrs: list[tuple[object, str, object]] = (),
              env: dict[str, str] | None = None):
    settle_transformers_probes()
    saved_mods = {name: sys.modules.get(name, _MISSING) for name in modules}
    saved_attrs = [(obj, name, getattr(obj, name, _MISSING)) for obj, name, _ in attrs]
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    for name, mod in modules.items():
        if getattr(mod, "__spec__", None) is None:  # importlib.util.find_spec (accelerate's probe) needs one
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules.update(modules)
    for obj, name, value in attrs:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, old in reversed(saved_attrs):
            if old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
        for k, old in saved_env.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
        for name, old in saved_mods.items():
            if old is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


# The emulated vendor modules report this machine's torch release as their own (a real
# torch_npu is built for one torch release); that release may lie outside the range
# the plugins were written against, so the probes are told to accept it.
UNTESTED_OK = {"HALINFER_ALLOW_UNTESTED_VERSIONS": "1"}


def npu_modules(cfg=None) -> dict[str, types.ModuleType]:
    from .npu import build_modules

    return build_modules(cfg)


def npu_stack(cfg, real_version: bool = False):
    """(modules, attribute patches, env) of one emulated torch_npu release.

    real_version: report the release's own torch_npu version (e.g. "2.5.1.post3") and make
    the plugin see that release's torch installed (versions.installed_torch), instead of
    this machine's torch release with the untested-version override."""
    import dataclasses

    from halinfer.plugins.ascend import versions

    if not real_version:
        return npu_modules(cfg), [], UNTESTED_OK
    cfg = dataclasses.replace(cfg, version=cfg.version or cfg.release_version)
    torch_release = cfg.release_version.split(".post")[0]
    return npu_modules(cfg), [(versions, "installed_torch", lambda: torch_release)], {}


def mlu_modules(cfg=None) -> dict[str, types.ModuleType]:
    from .mlu import build_modules

    return build_modules(cfg)


def maca_stack(cfg=None):
    """(modules, attribute patches) of the emulated MACA stack; Triton must already run interpreted."""
    from .maca import build

    return build(cfg)
