"""Each provider's declared fallbacks (Ops.fallbacks) are real: every declared case was
reached through Ops.reference by the conformance cases that ran before this file (named
to run last), and every declaration names an op the class overrides.  Undeclared
fallbacks fail the op tests themselves (conftest.no_silent_fallback)."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.ops import OP_NAMES, Ops

from .fallback_spy import HITS, RAN, ops_class, unreached
from .providers import collect_providers

PROVIDERS = [p for p in collect_providers() if not p.unavailable and p.ops is not None]


@pytest.mark.parametrize("prov", PROVIDERS, ids=[p.name for p in PROVIDERS])
def test_declarations_name_overridden_ops(prov):
    cls = ops_class(prov.ops)
    for op, cases in cls.fallbacks.items():
        assert op in OP_NAMES, f"{cls.__name__}.fallbacks names {op!r}, not an op (OP_NAMES)"
        assert getattr(cls, op) is not getattr(Ops, op), f"{cls.__name__} declares fallbacks for {op} it does not override"
        assert cases and all(isinstance(c, str) for c in cases), f"{cls.__name__}.fallbacks[{op!r}]: case names"


# Declared cases no conformance case exercises yet, and why: each is a known gap, kept in
# view here rather than dropped (dropping the declaration would turn a correct fallback
# into an error in production).
NOT_EXERCISED = {
    "paged_attention:gqa_ratio": "no case has more query heads per KV head than FIA (64) / TMO decode (128) take",
    "paged_attention:mixed_head_dims": "no non-MLA case has a value head size unlike the key's",
    "paged_attention:prefix_or_noncausal": "300I Duo only, whose provider is graph-only and skips prefix prefill",
    "fused_moe:experts": "no case has more than 1024 experts (aclnnGroupedMatmulV5's group limit)",
    "rotary:head_dim": "no case has a head size above 256",
}


def not_exercisable(cls: type) -> set[str]:
    """Cases the providers of ``cls`` cannot meet: a dtype, KV dtype or layout none of them runs."""
    provs = [p for p in PROVIDERS if ops_class(p.ops) is cls]
    out = set()
    if not any(torch.float32 in p.dtypes for p in provs):
        out.add("float32")
    if not any("int8" in p.kv_cache_dtypes for p in provs):
        out.add("int8_kv")
    out |= {"NHD", "HND"} - {p.kv_layout for p in provs}
    return out


CLASSES = sorted({ops_class(p.ops) for p in PROVIDERS if ops_class(p.ops).fallbacks}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_every_declared_case_reached_the_reference(cls, request):
    worker = getattr(request.config, "workerinput", None)
    if worker is not None and not worker.get("halinfer_conformance_whole"):
        # pytest-xdist spread the cases over workers; --dist loadfile keeps this folder in one (tests/conftest.py)
        pytest.skip("the conformance cases ran in several xdist workers; run with --dist loadfile to check this")
    if not RAN.get(cls):
        pytest.skip(f"no conformance test of {cls.__name__} ran in this session before this file")
    skip = not_exercisable(cls)
    missing = [m for m in unreached(cls, HITS.get(cls, {}), RAN[cls])
               if m.split(":")[1] not in skip and m not in NOT_EXERCISED]
    assert not missing, (f"{cls.__name__} declares fallbacks no conformance case reached: {missing}; "
                         "drop stale declarations or add a case that exercises them")
