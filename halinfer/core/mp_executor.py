"""The multi-process executor: one worker process per device rank, driven in lockstep.

Each step's StepPlan is pickled down one pipe per worker (multiprocessing.Pipe).
Pipes need no extra dependency and a plan is a few small arrays, so a send costs
tens of microseconds; shared memory or ZMQ would only pay off for much larger
messages.  Workers queue launches and answer collects in order, so the engine's
async scheduling overlaps host work with device work across the process boundary
too.  Rank 0 returns the tokens; every rank answers each collect, so a rank that
failed is noticed at once.  With several ranks the workers join one torch.distributed
group (a rendezvous on a free local port); a rank that dies leaves the others waiting
inside a collective, so the parent watches the processes while it waits for a reply
and reports the dead rank instead of hanging.
"""
from __future__ import annotations

import dataclasses
import os
import traceback
from collections import deque

import torch.multiprocessing as mp

from . import distributed
from .executor import Executor
from .worker import Worker, WorkerConfig


_POLL_S = 0.2   # how often a wait for a reply checks that every worker process is alive


class WorkerError(RuntimeError):
    """A worker process raised, or died."""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_main(cfg: WorkerConfig, conn) -> None:
    try:
        worker = Worker(cfg)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))
        return
    conn.send(("ok", None))
    pending: deque = deque()
    while True:
        try:
            cmd, arg = conn.recv()
        except EOFError:
            return  # the parent went away
        if cmd == "shutdown":
            distributed.destroy()
            conn.send(("ok", None))
            return
        try:
            if cmd == "launch":
                pending.append(worker.launch(arg))
                continue  # no reply: collect answers for it
            if cmd == "collect":
                item = pending.popleft()
                if isinstance(item, BaseException):
                    raise item
                res = worker.collect(item)
            else:  # "call": a start-up or rare method by name
                name, args = arg
                res = getattr(worker, name)(*args)
            conn.send(("ok", res if cfg.rank == 0 or cmd == "call" else None))
        except BaseException as e:  # noqa: BLE001 - one step's failure is the engine's to handle
            if cmd == "launch":
                pending.append(e)
            else:
                conn.send(("error", f"{type(e).__name__}: {e}"))
                if cfg.world_size > 1:
                    # The ranks' collectives are out of step now: leave, so the parent sees it.
                    conn.close()
                    os._exit(3)


class MultiProcessExecutor(Executor):
    def __init__(self, cfg: WorkerConfig, world_size: int = 1, start_timeout: float = 600.0):
        ctx = mp.get_context("spawn")  # CUDA and other device runtimes cannot be forked
        self.world_size = world_size
        self.conns, self.procs = [], []
        self._broken = False
        if world_size > 1 and cfg.dist_init_method is None:
            cfg = dataclasses.replace(cfg, dist_init_method=f"tcp://127.0.0.1:{_free_port()}")
        for rank in range(world_size):
            parent, child = ctx.Pipe()
            wcfg = dataclasses.replace(cfg, rank=rank, world_size=world_size)
            p = ctx.Process(target=_worker_main, args=(wcfg, child),
                            name=f"halinfer-worker-{rank}", daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        try:
            for rank in range(world_size):
                self._reply(rank, start_timeout)
        except BaseException:
            self.shutdown()
            raise
        self._graphs = None

    def _reply(self, rank: int, timeout: float | None = None):
        conn = self.conns[rank]
        waited = 0.0
        while not conn.poll(_POLL_S):   # a live rank may wait on a dead one's collective: watch them all
            waited += _POLL_S
            dead = [r for r, p in enumerate(self.procs) if p.exitcode is not None and r != rank]
            if dead and not conn.poll(0):
                self._broken = True
                r = dead[0]
                last = self._last_words(r)
                raise WorkerError(f"worker process {r} died (exit code {self.procs[r].exitcode}){last}; "
                                  f"the other ranks cannot go on without it")
            if timeout is not None and waited >= timeout:
                raise WorkerError(f"worker {rank} did not answer within {timeout:.0f} s")
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            self.procs[rank].join(1)
            self._broken = True
            code = self.procs[rank].exitcode
            raise WorkerError(f"worker process {rank} died (exit code {code})") from None
        if status == "error":
            raise WorkerError(f"worker {rank}: {value}")
        return value

    def _last_words(self, rank: int) -> str:
        """The error a rank sent before it exited, if it sent one."""
        try:
            if self.conns[rank].poll(0):
                status, value = self.conns[rank].recv()
                if status == "error":
                    return f" after: {value}"
        except (EOFError, OSError):
            pass
        return ""

    def _send_all(self, msg) -> None:
        for rank, conn in enumerate(self.conns):
            try:
                conn.send(msg)
            except (BrokenPipeError, OSError):
                self._broken = True
                raise WorkerError(f"worker process {rank} is gone (exit code {self.procs[rank].exitcode})") from None

    def _call(self, name: str, *args):
        self._send_all(("call", (name, args)))
        return [self._reply(r) for r in range(self.world_size)]

    def determine_num_blocks(self):
        res = self._call("determine_num_blocks")
        return min(n for n, _ in res), res[0][1]

    def init_cache(self, num_blocks):
        self._call("init_cache", num_blocks)
        self._graphs = self._call("graphs_captured")[0]

    def launch(self, plan):
        self._send_all(("launch", plan))
        return None

    def collect(self, handle):
        self._send_all(("collect", None))
        outs = [self._reply(r) for r in range(self.world_size)]
        return outs[0]

    def all_logits(self, plan):
        return self._call("all_logits", plan)[0]

    @property
    def graphs(self):
        return bool(self._graphs)

    def shutdown(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("shutdown", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            # ranks left inside a collective by a dead peer never read "shutdown"
            p.join(timeout=1 if self._broken else 10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self.conns, self.procs = [], []
