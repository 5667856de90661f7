"""The declared-fallback contract can fail: a silent super() fallback, an undeclared case
and a declared-but-unreached case are each caught, and a declared case is logged once."""
from __future__ import annotations

import logging

import pytest
import torch

from halinfer.core.ops import Ops, UndeclaredFallback
from halinfer.plugins.cpu.ops import CpuOps

from . import test_paged_attention as pa
from .fallback_spy import FallbackSpy, unreached
from .providers import Provider

PREFILL, DECODE = "prefix_gqa4_d128", "decode_gqa8_d64"


def _run(ops, case_id):
    prov = Provider("planted", ops=ops, block_sizes=(16, 32), kv_cache_dtypes=("auto", "int8"))
    case = next(c for c in pa.PA_CASES if c.id == case_id)
    spy = FallbackSpy(type(ops))
    with spy.watching():
        pa.test_paged_attention(prov, torch.float32, case, torch.Generator().manual_seed(0))
    return spy


class SilentOps(Ops):
    """Hands prefill to super() without declaring it: the pattern the contract forbids."""

    def paged_attention(self, q, kv, meta, **kw):
        if not meta.is_decode:
            return super().paged_attention(q, kv, meta, **kw)
        return Ops.reference(self, "paged_attention", "decode", q, kv, meta, **kw)


class PrefillOnlyDeclared(Ops):
    fallbacks = {"paged_attention": ("prefill", "alibi")}   # "alibi" is never reached below

    def paged_attention(self, q, kv, meta, **kw):
        return self.reference("paged_attention", "prefill" if not meta.is_decode else "decode", q, kv, meta, **kw)


def test_a_silent_super_fallback_is_caught():
    spy = _run(SilentOps(), PREFILL)     # the numbers are right: only the spy can tell
    assert spy.silent == ["paged_attention"] and spy.hits == []


def test_an_undeclared_case_raises_naming_it():
    with pytest.raises(UndeclaredFallback, match=r"'decode'.*declared for paged_attention: prefill, alibi"):
        _run(PrefillOnlyDeclared(), DECODE)


def test_a_declared_case_reaches_the_reference_and_an_unreached_one_is_reported():
    spy = _run(PrefillOnlyDeclared(), PREFILL)
    assert not spy.silent and set(spy.hits) == {("paged_attention", "prefill")}
    hits = {"paged_attention": {c for _, c in spy.hits}}
    assert unreached(PrefillOnlyDeclared, hits, {"paged_attention"}) == ["paged_attention:alibi"]
    assert unreached(PrefillOnlyDeclared, {}, set()) == []        # op not run: nothing to judge


def test_the_cpu_backend_declares_its_prefill_fallback_and_decodes_on_its_own():
    assert _run(CpuOps(), PREFILL).hits and not _run(CpuOps(), PREFILL).silent
    spy = _run(CpuOps(), DECODE)
    assert spy.hits == [] and spy.silent == []


def test_a_declared_fallback_is_logged_once(caplog):
    class Logged(Ops):
        fallbacks = {"rms_norm": ("float32",)}

        def rms_norm(self, x, weight, eps, residual=None):
            return self.reference("rms_norm", "float32", x, weight, eps, residual)

    x, w = torch.randn(3, 8), torch.ones(8)
    with caplog.at_level(logging.INFO, logger="halinfer"):
        for _ in range(3):
            torch.testing.assert_close(Logged().rms_norm(x, w, 1e-6), Ops().rms_norm(x, w, 1e-6))
    msgs = [r.getMessage() for r in caplog.records if "rms_norm" in r.getMessage()]
    assert len(msgs) == 1 and "float32" in msgs[0]
