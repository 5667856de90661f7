"""Programmatic dependent launch (Hopper and later): a kernel may start while the one before it
on the stream is still finishing, and does its input-independent work (weight prefetch,
address set-up) before it waits.

Why: a decode step is a chain of ~10 small launches a layer, each of which starts only after
the previous one has drained and then waits a full memory latency for its first bytes; with
W4A16 weights a layer's four GEMVs read only ~110 MB, so those gaps are a large part of the
step (BENCHMARKS.md: ~0.8 ms of a 2.95 ms step outside the GEMVs).

The contract every kernel launched this way keeps (the chain stays correct only if all do):
``pdl_enter`` runs in every program before its first load of anything an earlier kernel
wrote and before its first store.  Its wait returns when the previous grid has completed and
flushed, and that grid itself waited for the one before, so the order is transitive.  A
kernel launched without the attribute (cuBLAS, torch ops) is ordered as usual.

Opt-in (``HALINFER_PDL=1``) until measured on a GPU; never under the interpreter, whose
kernels cannot hold the PTX.
"""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .interpret import interpreting

ENV = "HALINFER_PDL"
ON = os.environ.get(ENV, "0") == "1"   # read once: enabled() runs at every launch


@functools.lru_cache(maxsize=None)
def _capable(device_type: str, index: int) -> bool:
    if torch.version.hip is not None:
        return False
    try:
        backend = triton.runtime.driver.active.get_current_target().backend
        major = getattr(torch, device_type).get_device_capability(index)[0]
    except Exception:  # noqa: BLE001 - a device module without the query: no PDL
        return False
    return backend == "cuda" and major >= 9


def enabled(t: torch.Tensor) -> bool:
    """Whether kernels on ``t``'s device launch with programmatic dependent launch."""
    if not ON or t.device.type == "cpu" or interpreting():
        return False
    index = t.device.index
    if index is None:
        index = getattr(torch, t.device.type).current_device()
    return _capable(t.device.type, index)


def launch_options(t: torch.Tensor) -> dict:
    """What a PDL-taking kernel's launch adds for ``t``'s device: its USE_PDL constexpr and the
    launch attribute, or nothing (the launch as before; the interpreter refuses the option)."""
    return {"USE_PDL": True, "launch_pdl": True} if enabled(t) else {}


@triton.jit
def pdl_enter(USE_PDL: tl.constexpr):
    """Wait for the previous kernel, then let the next one be scheduled as SMs free up (it
    waits in turn, so letting it in early is safe)."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def prefetch_l2(ptrs):
    """Ask L2 for the lines at ``ptrs`` (one address a 128-byte line is enough): issued before
    ``pdl_enter`` for weights no kernel writes, so their latency runs under the previous
    kernel's tail.  Compiled CUDA only: callers guard it with their USE_PDL."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; // dummy $0", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)
