"""Every backend's claims on vision-language rows are backed by tests that run on it:
the row's "vlm:" cases (halinfer.testing.vlm_cases) in the backend's dtypes (and with an
int8 / int4 KV cache where "KV INT8" / "KV INT4" is claimed), against
transformers (halinfer.testing.hf_vlm.assert_vlm_close).  Records as in
test_declared_support.py (HALINFER_RECORD_SUPPORT=1)."""
from __future__ import annotations

import pytest
import torch

from halinfer import LLM
from halinfer.core.plugin import load_plugins
from halinfer.support.seed import SEED_ROWS
from halinfer.testing.hf_vlm import assert_vlm_close, hf_vlm
from halinfer.testing.vlm_cases import build_vlm_case, is_vlm_case, vlm_prompts

from .support_records import note_result
from .test_declared_support import CANDIDATES, _modes


def _claims():
    out = set()
    for b in load_plugins().backends.values():
        if not b.available()[0]:
            continue
        for d in b.support():
            for r in SEED_ROWS:
                if d.family not in (r.model, f"{r.model} {r.size}"):
                    continue
                for col in ("FP16/BF16", "KV INT8", "KV INT4"):
                    if d.columns.get(col) or (b.name, col) in CANDIDATES:
                        out |= {(b.name, col, c) for c in r.cases if is_vlm_case(c)}
    return sorted(out)


CLAIMS = _claims()


@pytest.fixture(scope="module")
def vlm_case_dir(tmp_path_factory):
    built = {}

    def get(case):
        if case not in built:
            built[case] = build_vlm_case(case, str(tmp_path_factory.mktemp("vlm")))
        return built[case]

    return get


@pytest.mark.parametrize("backend_name,column,case", CLAIMS, ids=[f"{b}-{c}-{k}" for b, c, k in CLAIMS])
def test_claimed_vlm_cell_holds(backend_name, column, case, vlm_case_dir):
    backend = load_plugins().backends[backend_name]
    model_dir, ref_dir = vlm_case_dir(case)
    modes = _modes(backend, column)
    kv = {"KV INT8": "int8", "KV INT4": "int4"}.get(column, "auto")
    ok = False
    try:
        for dtype, graphs in modes:
            block = 8 if 8 in backend.block_sizes else backend.default_block_size
            llm = LLM(model_dir, device=backend.name, dtype=dtype, num_kv_blocks=max(160, 1280 // block),
                      block_size=block, enforce_eager=not graphs, max_num_seqs=8, kv_cache_dtype=kv)
            hf_lowp = hf_vlm(ref_dir).to(dtype)
            hf_exact = hf_vlm(ref_dir).to(dtype).float()
            # a quantized cache adds its own rounding on top of the dtype's (as test_declared_support.py)
            assert_vlm_close(llm, ref_dir, hf_exact, hf_lowp, vlm_prompts(case),
                             slack={"auto": 3.0, "int8": 6.0, "int4": 40.0}[kv])
        ok = True
    finally:
        note_result(backend_name, column, case, ok, "/".join(str(d).replace("torch.", "") for d, _ in modes), kv)
