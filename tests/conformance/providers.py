"""Who the conformance suite tests: one ``Provider`` per backend (or emulation).

Every op test runs once per provider, dtype and case, and compares the provider's
``ops`` with the core reference ``Ops()`` computed in float32 on the CPU.

Where providers come from
-------------------------
1. Every backend ``halinfer.core.plugin.load_plugins()`` finds (so
   ``HALINFER_PLUGINS`` applies).  An unavailable backend, or a plugin that failed
   to load, becomes a provider with ``unavailable`` set: its tests show up as
   skips carrying the backend's own reason, never as silence.
2. Every module in ``tests/conformance/extra_providers/``.  Such a module defines

       def providers() -> list[Provider]: ...

   and may import ``from ..providers import Provider``.  Use it for things that
   are not a backend on this machine: Triton kernels under ``TRITON_INTERPRET=1``,
   vendor emulations, test-only plugins.  When it cannot run here, return
   ``[Provider(name, unavailable="why")]`` (shows as a skip with that reason);
   returning ``[]`` hides it.  A module that raises breaks collection, loudly.

What a provider declares
------------------------
``ops`` is called with tensors on ``device`` in each of ``dtypes``.  KV caches
are allocated in ``kv_layout`` with a block size from ``block_sizes``, and the
attention metadata comes from ``metadata_builder(device, block_size).build(step)``.
Ops or features it does not implement are listed in ``skip`` with the reason
(keys: an op name such as ``"w8a8_linear"``, or ``"op:feature"`` such as
``"paged_attention:alibi"``; features are named in each test's cases).
``exact_sampling`` says ``sample`` uses the core's counter-based noise, so its
tokens must equal the reference's; otherwise only statistical checks apply.

Choosing providers
------------------
``HALINFER_CONFORMANCE_PROVIDERS=cpu,hndsim`` (comma list of names or fnmatch
patterns such as ``ascend-*``) runs only those; the others are reported as one
skip per test, naming the variable.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from halinfer.core.attention import MetadataBuilder
from halinfer.core.backend import Backend
from halinfer.core.plugin import load_plugins

ALL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SELECT_ENV = "HALINFER_CONFORMANCE_PROVIDERS"


@dataclass
class Provider:
    name: str
    ops: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtypes: tuple[torch.dtype, ...] = ALL_DTYPES
    kv_layout: str = "NHD"
    metadata_builder: Callable[[torch.device, int], MetadataBuilder] = MetadataBuilder
    block_sizes: tuple[int, ...] = (16,)
    kv_cache_dtypes: tuple[str, ...] = ("auto",)
    weight_quant: tuple[str, ...] = ()
    skip: dict[str, str] = field(default_factory=dict)
    unavailable: str | None = None
    exact_sampling: bool = True

    def skip_reason(self, op: str, features: tuple[str, ...] = ()) -> str | None:
        """Why this provider does not run ``op`` with ``features``, or None."""
        if op == "rotary_store_kv" and op not in self.skip:   # a composition: skipped where either part is
            return self.skip_reason("store_kv", features) or self.skip_reason("rotary", features)
        if op in self.skip:
            return self.skip[op]
        for f in features:
            if f"{op}:{f}" in self.skip:
                return self.skip[f"{op}:{f}"]
            if f in ("int8_kv", "int4_kv", "fp8_kv") and f[:-3] not in self.kv_cache_dtypes:
                return f"{self.name} declares no {f[:-3]} KV cache (kv_cache_dtypes={self.kv_cache_dtypes})"
        need = {"w4a16_linear": "awq", "w4a16_linear_normed": "awq", "w4a16_linear_gated": "awq", "gptq_linear": "gptq", "w8a8_linear": "w8a8", "quant_per_token_int8": "w8a8",
                "fp8_linear": "fp8", "w8a8_linear_prequant": "w8a8", "fp8_linear_prequant": "fp8"}.get(op)
        if op in ("rms_norm_quant", "act_and_mul_quant"):   # cases name the activation quantization: int8 (W8A8) or fp8
            need = "w8a8" if "int8" in features else "fp8" if "fp8" in features else None
        if need and need not in self.weight_quant:
            return f"{self.name} declares no {need!r} weight quantization (weight_quant={self.weight_quant})"
        return None

    def block_size(self, wanted: int) -> int:
        """The supported block size nearest to ``wanted`` (cases scale their lengths by it)."""
        return min(self.block_sizes, key=lambda b: (abs(b - wanted), b))


def from_backend(backend: Backend, name: str | None = None, **overrides) -> Provider:
    """A provider that tests ``backend`` exactly as the engine would use it."""
    ok, why = backend.available()
    kw: dict[str, Any] = dict(
        name=name or backend.name,
        dtypes=tuple(backend.dtypes),
        kv_layout=backend.kv_layout,
        metadata_builder=backend.metadata_builder,
        block_sizes=tuple(backend.block_sizes),
        kv_cache_dtypes=tuple(backend.kv_cache_dtypes),
        weight_quant=tuple(backend.weight_quant),
    )
    if ok:
        # Only touched when available: "npu" is no torch device type until torch_npu is imported,
        # and building ops may import vendor code.
        kw["device"] = backend.torch_device(None)
        kw["ops"] = backend.ops
    else:
        kw["unavailable"] = f"{backend.name} backend not available: {why}"
    kw.update(overrides)
    return Provider(**kw)


def _plugin_providers() -> list[Provider]:
    reg = load_plugins()
    out = []
    for rec in reg.records:
        if rec.error:
            out.append(Provider(rec.name, unavailable=f"{rec.name} plugin failed to load: {rec.error}"))
        out += [from_backend(b) for b in rec.backends if reg.backends.get(b.name) is b]
    return out


def _extra_providers() -> list[Provider]:
    out = []
    folder = Path(__file__).with_name("extra_providers")
    for mod in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__package__}.extra_providers.{mod.name}")
        out += list(module.providers())
    return out


@functools.lru_cache(maxsize=None)
def collect_providers() -> tuple[Provider, ...]:
    """Every provider, plugins first.  Computed once per test session."""
    found = _plugin_providers() + _extra_providers()
    names = [p.name for p in found]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"two conformance providers share a name: {sorted(dup)}"
    return tuple(_select(p) for p in found)


def _select(p: Provider) -> Provider:
    pats = [s.strip() for s in os.environ.get(SELECT_ENV, "").split(",") if s.strip()]
    if not pats or p.unavailable or any(fnmatch.fnmatchcase(p.name, pat) for pat in pats):
        return p
    return Provider(p.name, unavailable=f"not selected by {SELECT_ENV}={os.environ[SELECT_ENV]}")
