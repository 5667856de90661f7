"""Graph capture emulated on the CPU: record during capture, re-run on replay.

Device graphs (CUDA graphs, Ascend aclgraph, Cambricon MLU graphs) record the
kernels a region launches, with every pointer and every host-side argument as
it was at capture.  A replay relaunches them: device buffers are read with
their *current* contents, host arguments (Python ints, SymInt[] lists) are the
*captured* ones unless the program patches them (Ascend's task update).

This module reproduces that on CPU tensors so a plugin's graph glue is really
exercised:

- While a capture is open, a TorchDispatchMode appends every aten op to a tape
  (function, argument objects, outputs).  A vendor op emulation wrapped with
  ``vendor_op`` is taped as one step instead, with its non-tensor arguments
  deep-copied: that is the host-side freeze.
- ``replay()`` re-runs the tape in order; a step's fresh outputs are copied
  into the tensors it produced at capture (those are what later steps and the
  caller hold), so values flow exactly as through device memory.
- A host sync inside a capture (``.item()``, ``bool(t)``, ``nonzero``) raises
  CaptureError, as it does on a device (illegal during stream capture).
- Ascend's task groups: steps taped between ``open_group`` and ``close_group``
  belong to a handle; an update region re-issues the op with new arguments,
  which replace the taped ones (the real driver patches the task the same way).
"""
from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# Ops that read device memory back to the host: illegal while capturing.
_HOST_SYNC_OPS = {
    aten.item.default,
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.nonzero.default,
    aten.masked_select.default,
}


class CaptureError(RuntimeError):
    """Something a real device refuses during graph capture or replay."""


def _freeze(x):
    """Deep-copy host values; keep tensors by reference (they are device memory)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(_freeze(v) for v in x)
    if isinstance(x, dict):
        return {k: _freeze(v) for k, v in x.items()}
    return copy.deepcopy(x)


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype)


def _refresh(recorded, fresh) -> None:
    """Copy a re-run's outputs into the tensors produced at capture."""
    rec_leaves, _ = tree_flatten(recorded)
    new_leaves, _ = tree_flatten(fresh)
    for r, n in zip(rec_leaves, new_leaves):
        if isinstance(r, torch.Tensor) and isinstance(n, torch.Tensor) and not _same_memory(r, n):
            r.copy_(n)


@dataclass
class AtenStep:
    func: Any
    args: tuple
    kwargs: dict
    out: Any

    def run(self):
        fresh = self.func(*self.args, **self.kwargs)
        _wait_collectives(fresh)
        _refresh(self.out, fresh)


def _wait_collectives(out) -> None:
    """A collective (c10d.allreduce_ & co.) returns a Work besides its tensors: on a device
    the captured kernel is ordered on the stream; here the re-run must be waited for."""
    leaves, _ = tree_flatten(out)
    for w in leaves:
        if not isinstance(w, torch.Tensor) and callable(getattr(w, "wait", None)):
            w.wait()


@dataclass
class VendorStep:
    name: str
    fn: Callable
    args: tuple
    kwargs: dict
    out: Any
    group: int | None = None

    def run(self):
        _refresh(self.out, self.fn(*self.args, **self.kwargs))


@dataclass
class TaskGroupHandle:
    """What ``graph_task_group_end`` returns: the taped steps of one group."""

    graph: "TapeGraph"
    group: int

    def steps(self) -> list[VendorStep]:
        return [s for s in self.graph.tape if isinstance(s, VendorStep) and s.group == self.group]


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: "TapeGraph"):
        super().__init__()
        self.graph = graph
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        if func in _HOST_SYNC_OPS:
            raise CaptureError(
                f"{func} reads device memory on the host during graph capture "
                "(.item()/.tolist()/bool(tensor)/nonzero); a device capture fails here")
        out = func(*args, **kwargs)
        self.graph.tape.append(AtenStep(func, args, kwargs, out))
        return out


_state = threading.local()


def capturing_graph() -> "TapeGraph | None":
    return getattr(_state, "graph", None)


class TapeGraph:
    """An emulated device graph (NPUGraph / MLUGraph / CUDAGraph stand-in)."""

    def __init__(self):
        self.tape: list = []
        self.captured = False
        self.replays = 0
        self._recorder: _Recorder | None = None
        self._group: int | None = None
        self._groups = 0
        self.waited_events: list = []   # ExternalEvents the graph waits on at replay

    # -- capture ----------------------------------------------------------------
    def capture_begin(self, *args, **kwargs):
        if capturing_graph() is not None:
            raise CaptureError("another graph capture is already underway")
        if self.captured:
            raise CaptureError("this graph was already captured; reset() it first")
        self._recorder = _Recorder(self)
        self._recorder.__enter__()
        _state.graph = self

    def capture_end(self):
        _state.graph = None
        rec, self._recorder = self._recorder, None
        rec.__exit__(None, None, None)
        if self._group is not None:
            raise CaptureError("graph_task_group_begin without graph_task_group_end")
        self.captured = True

    def reset(self):
        self.tape.clear()
        self.captured = False
        self.waited_events.clear()

    def pool(self):
        return (id(self), 0)

    # -- vendor steps and task groups ---------------------------------------------
    def paused(self):
        return _Paused(self._recorder)

    def add_vendor_step(self, step: VendorStep) -> None:
        step.group = self._group
        self.tape.append(step)

    def open_group(self) -> None:
        if self._group is not None:
            raise CaptureError("nested graph_task_group_begin")
        self._groups += 1
        self._group = self._groups

    def close_group(self) -> TaskGroupHandle:
        if self._group is None:
            raise CaptureError("graph_task_group_end without graph_task_group_begin")
        handle, self._group = TaskGroupHandle(self, self._group), None
        if not handle.steps():
            raise CaptureError("empty task group: no vendor op was launched inside it")
        return handle

    # -- replay -----------------------------------------------------------------
    def replay(self):
        if not self.captured:
            raise CaptureError("replay() before a completed capture")
        for ev in self.waited_events:
            ev.consume_for_replay()
        with torch.inference_mode():
            for step in self.tape:
                step.run()
        self.replays += 1


class _Paused:
    def __init__(self, rec):
        self.rec = rec

    def __enter__(self):
        if self.rec is not None:
            self.rec.paused += 1

    def __exit__(self, *exc):
        if self.rec is not None:
            self.rec.paused -= 1


# -- task update regions (Ascend graph_task_update_begin/end) --------------------------
def begin_update(handle: TaskGroupHandle) -> None:
    if getattr(_state, "update", None) is not None:
        raise CaptureError("graph_task_update_begin inside another update region")
    if capturing_graph() is not None:
        raise CaptureError("graph_task_update_begin during a capture")
    _state.update = [handle, 0]


def end_update() -> None:
    upd = getattr(_state, "update", None)
    if upd is None:
        raise CaptureError("graph_task_update_end without graph_task_update_begin")
    handle, n = upd
    _state.update = None
    if n != len(handle.steps()):
        raise CaptureError(f"update region re-issued {n} op(s); the task group holds {len(handle.steps())}")


def vendor_op(name: str):
    """Decorator for an emulated vendor op: one taped step, host arguments frozen."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            upd = getattr(_state, "update", None)
            if upd is not None:
                handle, n = upd
                steps = handle.steps()
                if n >= len(steps) or steps[n].name != name:
                    raise CaptureError(f"update region issued {name}, which the task group does not hold")
                # The re-issued launch replaces the recorded one (new host values included).
                steps[n].args, steps[n].kwargs = _freeze(args), _freeze(kwargs)
                upd[1] = n + 1
                return None
            g = capturing_graph()
            if g is None:
                return fn(*args, **kwargs)
            fargs, fkwargs = _freeze(args), _freeze(kwargs)
            with g.paused():
                out = fn(*args, **kwargs)
            g.add_vendor_step(VendorStep(name, fn, fargs, fkwargs, out))
            return out

        call.emulated_name = name
        return call

    return wrap


class GraphContext:
    """``with graph(g, pool=..., stream=...)``: the capture region."""

    def __init__(self, graph: TapeGraph, pool=None, stream=None, **kw):
        if not isinstance(graph, TapeGraph):
            raise TypeError(f"graph() needs the emulated graph class, got {type(graph).__name__}")
        self.graph = graph
        self.options = dict(pool=pool, stream=stream, **kw)

    def __enter__(self):
        self.graph.capture_begin()
        return self.graph

    def __exit__(self, *exc):
        self.graph.capture_end()
        return False
