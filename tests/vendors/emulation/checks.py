"""Argument checks shared by the emulated vendor ops.

They enforce what the vendor documents about each argument's *kind*, so plugin
glue that passes the wrong kind fails here as it would on the device: a device
tensor where the op takes a host-side SymInt[] (the real op would sync, and
freeze the value under graph capture), a Python list where it takes a device
tensor, int64 where it wants int32, a non-contiguous tensor where the docs say
"not for non-contiguous".

Emulated device tensors live on the CPU, so "device tensor" here means "a
torch.Tensor"; host-side integer arrays must be Python lists/tuples of ints.
(The real FIA also accepts a CPU tensor for SymInt[]; under emulation a CPU
tensor cannot be told from a device tensor, so the emulation is stricter and
the plugins pass lists.)
"""
from __future__ import annotations

import numbers

import torch

FLOAT16S = (torch.float16, torch.bfloat16)
FLOATS = (torch.float16, torch.bfloat16, torch.float32)


class VendorArgError(TypeError):
    """An argument the real vendor op would reject (or silently misuse)."""


def tensor(op: str, name: str, t, dtypes=None, ndim=None, contiguous=False) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise VendorArgError(f"{op}: {name} must be a device tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        raise VendorArgError(f"{op}: {name} dtype {t.dtype} not in {tuple(dtypes)}")
    if ndim is not None and t.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise VendorArgError(f"{op}: {name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if contiguous and not t.is_contiguous():
        raise VendorArgError(f"{op}: {name} must be contiguous")
    return t


def optional_tensor(op, name, t, **kw):
    return None if t is None else tensor(op, name, t, **kw)


def host_ints(op: str, name: str, v, length=None) -> list[int]:
    if isinstance(v, torch.Tensor):
        raise VendorArgError(
            f"{op}: {name} is a host-side SymInt[]; got a tensor (pass a Python list: a device "
            "tensor forces a sync and is frozen into a captured graph)")
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, numbers.Integral) for x in v):
        raise VendorArgError(f"{op}: {name} must be a list of ints, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise VendorArgError(f"{op}: {name} has {len(v)} entries, expected {length}")
    return [int(x) for x in v]


def host_int(op: str, name: str, v) -> int:
    if isinstance(v, torch.Tensor) or not isinstance(v, numbers.Integral) or isinstance(v, bool):
        raise VendorArgError(f"{op}: {name} must be a Python int, got {type(v).__name__}")
    return int(v)


def host_float(op: str, name: str, v) -> float:
    if isinstance(v, torch.Tensor) or not isinstance(v, numbers.Real) or isinstance(v, bool):
        raise VendorArgError(f"{op}: {name} must be a Python float, got {type(v).__name__}")
    return float(v)


def same_device(op: str, *ts) -> None:
    devs = {t.device for t in ts if isinstance(t, torch.Tensor)}
    if len(devs) > 1:
        raise VendorArgError(f"{op}: tensors on different devices {devs}")


def require(cond: bool, op: str, msg: str) -> None:
    if not cond:
        raise VendorArgError(f"{op}: {msg}")


def device_ordinal(op: str, d) -> int:
    """What torch's device modules accept in set_device: an int, or a device with an index."""
    if isinstance(d, int) and not isinstance(d, bool):
        return d
    if isinstance(d, (str, torch.device)):
        d = torch.device(d)
        if d.index is not None:
            return d.index
    raise ValueError(f"{op}: Expected a torch.device with a specified index or an integer, but got: {d}")
