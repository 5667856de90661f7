"""Small helpers shared by the kernel launchers."""
from __future__ import annotations

import functools

import torch

from .interpret import interpreting

LOG2E = 1.4426950408889634


def next_pow2(n: int) -> int:
    return 1 << (max(1, int(n)) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def on_interpreter(t: torch.Tensor) -> bool:
    """True when ``t`` is handled by Triton's interpreter (CPU tensors); raises if that cannot work."""
    if t.device.type != "cpu":
        return interpreting()
    if not interpreting():
        raise RuntimeError(
            "halinfer's Triton kernels got CPU tensors, but triton runs compiled in this process; call "
            "halinfer.kernels.triton.interpret.ensure_interpreter() (or set TRITON_INTERPRET=1) before triton "
            "is imported")
    return True


@functools.lru_cache(maxsize=None)
def _sm_count(device_type: str, index: int) -> int:
    try:
        mod = getattr(torch, device_type)
        return int(mod.get_device_properties(index).multi_processor_count)
    except Exception:  # noqa: BLE001 - a device module without this query: assume a mid-size GPU
        return 108


def sm_count(device: torch.device) -> int:
    """Multiprocessors of ``device`` (sizes split-KV grids); 2 under the interpreter, so tests split."""
    if device.type == "cpu":
        return 2
    index = device.index
    if index is None:
        index = getattr(torch, device.type).current_device()
    return _sm_count(device.type, index)


def dot_precision(dtype: torch.dtype) -> str:
    # float32 models asked for float32 accuracy: no tf32 in the attention dots.
    return "ieee" if dtype == torch.float32 else "tf32"


_COUNTERS: dict = {}   # (device, owner) -> int32 zeros
_RETIRED: list = []    # outgrown counter buffers: a captured graph may still point at one


def zeroed_counters(device: torch.device, n: int, owner: str) -> torch.Tensor | None:
    """At least ``n`` int32 zeros for a kernel's last-program pattern (each program bumps its
    group's counter; the last one does the group's tail work and writes 0 back, so the buffer is
    zero again after every launch).  One buffer per (device, owner).  None when it would have
    to be allocated during a CUDA-graph capture: the caller then takes its path without one.
    An outgrown buffer is kept, never freed: graphs captured on it keep using it."""
    key = (str(device), owner)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        if buf is not None:
            _RETIRED.append(buf)
        buf = torch.zeros(max(4096, n), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf
