"""The tensor-parallel group a worker belongs to, and the two collectives layers use.

A worker joins ``torch.distributed`` with its backend's collective (``Backend.dist_backend``:
gloo, nccl, hccl, cncl); the model's parallel layers (models/parallel.py) hold the
``TPGroup`` and call ``all_reduce`` / ``all_gather`` on it.  A group of one is a no-op,
so a single-device model runs exactly the code it ran before tensor parallelism.

The collectives are plain ``torch.distributed`` calls on the current stream: NCCL's
are capturable in CUDA graphs, so a captured decode step replays its all-reduces too
(``Backend.graph_collectives`` says where a backend declares that).
"""
from __future__ import annotations

import atexit
import datetime
import gc
import os
from dataclasses import dataclass

import torch

# torchrun's environment: a process launched by it (or by any launcher that sets these)
# joins through "env://" and takes its rank from RANK, its device from LOCAL_RANK.
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


class CollectiveError(RuntimeError):
    """The backend's collective cannot be used (not registered, or the group failed to form)."""


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    size: int = 1
    group: object = None        # the torch.distributed process group (None: the default one)

    @property
    def is_parallel(self) -> bool:
        return self.size > 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of x over the ranks (in place; returns x)."""
        if self.size > 1:
            torch.distributed.all_reduce(x, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The ranks' x concatenated along dim, in rank order."""
        if self.size == 1:
            return x
        dim = dim % x.dim()
        x = x.contiguous()
        out = torch.empty((self.size * x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        # all_gather_single is the newer name (torch 2.13 deprecates the older one)
        gather = getattr(torch.distributed, "all_gather_single", None) or torch.distributed.all_gather_into_tensor
        gather(out, x, group=self.group)
        if dim == 0:
            return out
        # [size * d0, ...] -> [d0, ..., size * d_dim, ...]
        parts = out.view((self.size,) + tuple(x.shape)).unbind(0)
        return torch.cat(parts, dim=dim)


SINGLE = TPGroup()


def split_evenly(total: int, size: int, rank: int, what: str) -> tuple[int, int]:
    """(start, length) of rank's equal share of ``total`` items; ``what`` names them for the error."""
    if total % size:
        raise ValueError(f"{what} ({total}) is not divisible by tensor_parallel_size={size}; "
                         f"sizes that fit: {', '.join(str(d) for d in divisors(total))}")
    n = total // size
    return rank * n, n


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def launched_externally() -> bool:
    """True in a process torchrun (or a launcher like it) started as one rank of several."""
    return all(k in os.environ for k in LAUNCHER_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def init_tp_group(dist_backend: str, rank: int, world_size: int, init_method: str | None,
                  device: torch.device | None = None, timeout_s: float = 600.0) -> TPGroup:
    """Join torch.distributed (once per process) and return the group of every rank."""
    if world_size == 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_available():
        raise CollectiveError("this torch build has no torch.distributed; tensor parallelism needs it")
    if not dist.is_initialized():
        if not dist_backend:
            raise CollectiveError("the backend declares no collective (Backend.dist_backend is empty); "
                                  "it can run only tensor_parallel_size=1")
        known = {b.lower() for b in dist.Backend.backend_list}
        if dist_backend.lower() not in known:
            raise CollectiveError(
                f"collective {dist_backend!r} is not registered with torch.distributed here (known: "
                f"{', '.join(sorted(known))}); the device plugin's library registers it when imported")
        kw = {}
        if device is not None and device.type != "cpu":
            kw["device_id"] = device  # binds the communicator to this rank's device at once
        try:
            dist.init_process_group(dist_backend, init_method=init_method or "env://", rank=rank,
                                    world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s), **kw)
        except Exception as e:  # noqa: BLE001 - reported with what was tried
            raise CollectiveError(f"rank {rank} of {world_size} could not join the {dist_backend} group "
                                  f"({init_method or 'env://'}): {type(e).__name__}: {e}") from e
        atexit.register(destroy)
    elif dist.get_world_size() != world_size:
        raise CollectiveError(f"torch.distributed is already set up with {dist.get_world_size()} ranks, "
                              f"tensor_parallel_size is {world_size}")
    return TPGroup(rank=dist.get_rank(), size=world_size, group=None)


def destroy(barrier_timeout_s: float = 30.0) -> None:
    """Leave the group while the interpreter is fully alive.

    gloo ranks first meet at a barrier, so that none closes its connections while a peer
    still uses them; then the group goes and a collection frees what its threads still
    hold.  A gloo rank under torchrun aborted at interpreter teardown twice in CI
    ("terminate called without an active exception", no Python frame on any thread): the
    teardown torch's PR 179291 describes, worker threads releasing a collective's tensors
    after the interpreter is gone.  (NCCL gets no barrier: one with a dead peer would hang
    the exit for the group's whole timeout.)  Also run at exit (``init_tp_group`` registers
    it), for a script that never calls ``shutdown``."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    dist = torch.distributed
    if dist.get_backend() == "gloo":
        try:
            # a dead peer answers at once or after the timeout, never hangs the exit
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=barrier_timeout_s))
        except Exception:  # noqa: BLE001 - leaving anyway: a dead peer must not keep this rank here
            pass
    dist.destroy_process_group()
    gc.collect()
