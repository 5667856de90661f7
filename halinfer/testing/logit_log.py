"""Record the logits every sampled token was drawn from, per request (tests only).

Wraps an in-process engine's runner (sampling) and scheduler (results) for the
duration of a ``with`` block; the production runner carries no hook for it.
Steps are sampled and their results applied in the same order, so a FIFO pairs
each step's logits with the sequences that drew from them.
"""
from __future__ import annotations

import contextlib
from collections import deque


@contextlib.contextmanager
def record_logits(llm):
    """Yields a dict request_id -> [float32 logits row per drawn token, in order]."""
    eng = llm.engine
    runner, sched = eng.runner, eng.scheduler
    log: dict[str, list] = {}
    fifo: deque = deque()
    real_sample, real_update = runner._sample, sched.update

    def sample(slots, logits, offsets):
        fifo.append(logits.detach().float().cpu())
        return real_sample(slots, logits, offsets)

    def update(batch, out):
        rows = [s for s, m in zip(batch.seqs, batch.plan.sample) if m]
        if rows:
            lg = fifo.popleft()
            for i, s in enumerate(rows):
                if not s.is_finished:
                    log.setdefault(s.request_id, []).append(lg[i])
        return real_update(batch, out)

    runner._sample, sched.update = sample, update
    try:
        yield log
    finally:
        runner._sample, sched.update = real_sample, real_update
