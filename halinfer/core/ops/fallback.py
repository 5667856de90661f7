"""Declared fallbacks: when an override may hand a call back to the core's reference.

An Ops subclass that cannot run some calls of an op on its own kernels names those
cases in ``fallbacks`` (op name -> case names) and hands such a call over with
``self.reference(op, case, *args, **kwargs)``.  A case that is not declared raises
``UndeclaredFallback``: a silent slow path (often with host syncs that break graph
capture) is a contract violation, not an implementation detail.  Each (table, op,
case) is logged once on the ``halinfer`` logger, so a user sees which calls run on the
reference.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("halinfer")

_logged: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


class UndeclaredFallback(NotImplementedError):
    """An override asked for the reference in a case its table does not declare."""


def check_declared(table: type, op: str, case: str) -> None:
    declared = getattr(table, "fallbacks", {}).get(op, ())
    if case not in declared:
        raise UndeclaredFallback(
            f"{table.__name__}.{op} fell back to the core reference for case {case!r}, which "
            f"{table.__name__}.fallbacks does not declare (declared for {op}: {', '.join(declared) or 'none'}); "
            f"declare it, e.g. fallbacks = {{{op!r}: ({case!r}, ...)}}, or handle the case")


def log_once(table: type, op: str, case: str) -> None:
    key = (table.__qualname__, op, case)
    with _lock:
        if key in _logged:
            return
        _logged.add(key)
    log.info("%s.%s: case %r runs on the core's torch reference", table.__name__, op, case)
