"""Parametrizing a conformance test over providers x dtypes x cases.

    CASES = [case("T7_H67", T=7, H=67), case("T1000_H67_res", T=1000, H=67, features=("residual",))]

    @conformance("rms_norm", CASES)
    def test_rms_norm(prov, dtype, case, gen): ...

Test ids read ``test_rms_norm[cpu-bf16-T1000_H67_res]``.  An unavailable provider
contributes one skipped id per test, carrying its reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from .providers import ALL_DTYPES, collect_providers

DTYPE_IDS = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class Case:
    id: str
    kw: dict[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] = ()      # looked up in Provider.skip as "op:feature"
    dtypes: tuple[torch.dtype, ...] | None = None   # None: every dtype of the test
    slow: bool = False

    def get(self, name, default=None):
        return self.kw.get(name, default)

    def __getattr__(self, name):
        try:
            return self.__dict__["kw"][name]
        except KeyError:
            raise AttributeError(name) from None


def case(id: str, *, features=(), dtypes=None, slow=False, **kw) -> Case:
    return Case(id, kw, tuple(features), dtypes, slow)


def conformance(op: str, cases: list[Case], dtypes=ALL_DTYPES):
    """pytest.mark.parametrize("prov,dtype,case", ...) over every provider."""
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids), f"duplicate case ids in {op}: {ids}"
    params = []
    for p in collect_providers():
        if p.unavailable:
            params.append(pytest.param(p, None, None, id=p.name, marks=pytest.mark.skip(reason=p.unavailable)))
            continue
        for dt in dtypes:
            if dt not in p.dtypes:
                continue
            for c in cases:
                if c.dtypes is not None and dt not in c.dtypes:
                    continue
                marks = []
                why = p.skip_reason(op, c.features)
                if why:
                    marks.append(pytest.mark.skip(reason=why))
                if c.slow:
                    marks.append(pytest.mark.slow)
                params.append(pytest.param(p, dt, c, id=f"{p.name}-{DTYPE_IDS[dt]}-{c.id}", marks=marks))
    mark = pytest.mark.parametrize("prov,dtype,case", params)

    def decorate(fn):
        fn.conformance_op = op   # which op the test exercises (fallback_spy: declared cases reached)
        return mark(fn)
    return decorate
