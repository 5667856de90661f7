"""Watching how a provider's ops reach the core reference during a conformance test.

Every reference method an ops class overrides is wrapped on ``Ops``: a call that reaches
it from that class without going through ``Ops.reference`` (a plain ``super().op(...)``
or ``Ops.op(self, ...)``) is a *silent* fallback, which the contract forbids.  Calls
through ``Ops.reference`` are recorded as (op, case) hits, so the suite can check that
each declared case is really reached.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict

import pytest

from halinfer.core.ops import OP_NAMES, Ops

# ops class -> op -> cases reached through Ops.reference; ops class -> ops its tests ran
HITS: dict[type, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
RAN: dict[type, set[str]] = defaultdict(set)


def ops_class(ops) -> type:
    """The Ops subclass behind a provider's ops (test wrappers delegate through ``_ops``)."""
    while not isinstance(ops, Ops) and hasattr(ops, "_ops"):
        ops = ops._ops
    return type(ops)


class FallbackSpy:
    def __init__(self, cls: type):
        self.cls = cls
        self.silent: list[str] = []
        self.hits: list[tuple[str, str]] = []
        self._inside = 0

    @contextlib.contextmanager
    def watching(self):
        with pytest.MonkeyPatch.context() as mp:
            for op in OP_NAMES:
                ref = Ops.__dict__[op]
                if getattr(self.cls, op) is not ref:   # overridden: reaching ref must be declared
                    mp.setattr(Ops, op, self._wrap(op, ref))
            real_reference = Ops.reference

            def reference(ops, op, case, *args, **kwargs):
                self.hits.append((op, case))
                self._inside += 1
                try:
                    return real_reference(ops, op, case, *args, **kwargs)
                finally:
                    self._inside -= 1

            mp.setattr(Ops, "reference", reference)
            yield self

    def _wrap(self, op, ref):
        def watched(ops, *args, **kwargs):
            if isinstance(ops, self.cls) and not self._inside:
                self.silent.append(op)
            return ref(ops, *args, **kwargs)
        return watched


def unreached(cls: type, hits: dict[str, set[str]], ran: set[str]) -> list[str]:
    """Declared (op, case)s of ``cls`` never reached, among the ops whose tests ran."""
    return [f"{op}:{case}" for op, cases in getattr(cls, "fallbacks", {}).items() if op in ran
            for case in cases if case not in hits.get(op, set())]
