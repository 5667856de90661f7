"""Every backend's claims are backed by tests that run on it.

For each available backend and each support column it claims for a seed row that
halinfer implements, the row's model cases run through that backend in the
column's mode and must match HF transformers (bf16 or fp16: near-tie aware;
"KV INT8": with an int8 cache).  A claim whose test fails on the backend fails
here.  With HALINFER_RECORD_SUPPORT=1 the passing cells are written to
halinfer/support/verified/<backend>.json, which `halinfer support` reads.
"""
from __future__ import annotations

import os
import zlib

import pytest
import torch

from halinfer import LLM
from halinfer.core.plugin import load_plugins
from halinfer.support.seed import SEED_ROWS
from halinfer.testing.hf_compare import assert_close_to_transformers, hf_model, random_prompts

from halinfer.testing.cases import CASES
from halinfer.testing.quant_ckpt import fake_quant_activations, quantize
from halinfer.testing.unconvert import reference_twin

from .support_records import note_result

TESTED_COLUMNS = ("FP16/BF16", "KV INT8", "KV INT4", "W4A16", "W8A8", "FP8")
# A quantized column runs the case's checkpoint quantized in these formats (quant_ckpt.py);
# the reference is transformers on the dequantized twin, activations fake-quantized as the
# format quantizes them.
QUANT_FORMATS = {"W4A16": [("awq", dict(group=32)), ("gptq", dict(group=32, desc_act=True)),
                           ("pack", dict(group=32, sym=False, actorder="group"))],   # llm-compressor's
                 "W8A8": [("w8a8", {})], "FP8": [("fp8", dict(block=(128, 128)))]}


# Cells to test before they are claimed: HALINFER_CANDIDATE_CLAIMS="cuda:W4A16,cuda:KV INT4" adds
# those columns to the backend's rows that the CPU claims them on (support/declare.py:
# QUANT_CASES for weight formats, every implemented row for KV INT4), and lets the engine
# accept the format for the test (weight_quant patched).
CANDIDATES = {tuple(c.split(":", 1)) for c in os.environ.get("HALINFER_CANDIDATE_CLAIMS", "").split(",") if ":" in c}
COLUMN_FORMATS = {"W4A16": ("awq", "gptq"), "W8A8": ("w8a8",), "FP8": ("fp8",)}


def _claims():
    from halinfer.support.declare import QUANT_CASES

    out = []
    for b in load_plugins().backends.values():
        ok, _ = b.available()
        if not ok:
            continue
        for d in b.support():
            rows = [r for r in SEED_ROWS if d.family in (r.model, f"{r.model} {r.size}") and r.cases]
            for r in rows:
                for col in TESTED_COLUMNS:
                    candidate = (b.name, col) in CANDIDATES and (col == "KV INT4" or set(r.cases) <= QUANT_CASES)
                    if d.columns.get(col) or candidate:
                        out.append((b.name, col, r))
    return out


CLAIMS = _claims()
# One test per (backend, column, case); a row is verified when all its cases pass.
# Vision-language cases ("vlm:...") run in test_declared_vlm_support.py.
UNIQUE = sorted({(b, col, case) for b, col, r in CLAIMS for case in r.cases if not case.startswith("vlm:")})


def _modes(backend, column) -> list[tuple[torch.dtype, bool]]:
    """(dtype, graphs) to run a claimed cell in: bf16 with graphs where the backend has
    them, and fp16 eager as well for the FP16/BF16 column, so each dtype and each mode runs."""
    graphs = "graph" in backend.graph_modes
    modes = []
    for d in (torch.bfloat16, torch.float16):
        if d in backend.dtypes:
            modes.append((d, graphs if not modes else False))
    if column != "FP16/BF16":
        modes = modes[:1]
    return modes or [(torch.float32, False)]


@pytest.mark.parametrize("backend_name,column,case", UNIQUE, ids=[f"{b}-{c}-{k}" for b, c, k in UNIQUE])
def test_claimed_cell_holds(backend_name, column, case, case_dirs, tmp_path, monkeypatch):
    backend = load_plugins().backends[backend_name]
    if (backend_name, column) in CANDIDATES:
        monkeypatch.setattr(backend, "weight_quant",
                            tuple(dict.fromkeys((*backend.weight_quant, *COLUMN_FORMATS.get(column, ())))))
    model_dir, ref_dir = case_dirs(case)
    kv = {"KV INT8": "int8", "KV INT4": "int4"}.get(column, "auto")
    ok = True
    try:
        for dtype, graphs in _modes(backend, column):
            ok = False
            if column in QUANT_FORMATS:
                for method, opts in QUANT_FORMATS[column]:
                    _check_quantized(backend, model_dir, ref_dir, case, dtype, graphs, method, opts, tmp_path)
            else:
                _check_mode(backend, model_dir, ref_dir, case, dtype, graphs, kv)
            ok = True
    finally:
        note_result(backend_name, column, case, ok, "/".join(str(d).replace("torch.", "") for d, _ in
                                                             _modes(backend, column)), kv)


def _check_mode(backend, model_dir, ref_dir, case, dtype, graphs, kv):
    block = 8 if 8 in backend.block_sizes else backend.default_block_size
    llm = LLM(model_dir, device=backend.name, dtype=dtype, kv_cache_dtype=kv, num_kv_blocks=max(160, 1280 // block),
              block_size=block, enforce_eager=not graphs, max_num_seqs=8)
    # References on the CPU: transformers in float32 with the weights rounded to the run's
    # dtype (the same model, computed exactly) and transformers computing in that dtype
    # (how much noise the dtype itself brings).
    hf_lowp = hf_model(model_dir, dtype=dtype, reference_dir=ref_dir)
    hf_exact = hf_model(model_dir, dtype=dtype, reference_dir=ref_dir).float()
    prompts = random_prompts(zlib.crc32(case.encode()), llm.engine.vocab_size, lengths=(13, 5))
    # A quantized cache adds its own rounding on top of the dtype's: allow more slack for it.
    slack = {"auto": 4.0, "int8": 6.0, "int4": 40.0}[kv]
    assert_close_to_transformers(llm, hf_exact, hf_lowp, prompts, n_tokens=16 if kv != "int4" else 8, slack=slack)


def _check_quantized(backend, model_dir, ref_dir, case, dtype, graphs, method, opts, tmp_path):
    qdir, ddir = quantize(model_dir, str(tmp_path / method), method, **opts)
    converter = CASES[case].converter
    if converter is not None:
        # a family transformers lacks: its dense twin, put back into the reference's layout
        ddir = reference_twin(converter, ref_dir, model_dir, ddir, str(tmp_path / f"{method}-reference"))
    block = 8 if 8 in backend.block_sizes else backend.default_block_size
    llm = LLM(qdir, device=backend.name, dtype=dtype, num_kv_blocks=max(160, 1280 // block), block_size=block,
              enforce_eager=not graphs, max_num_seqs=8)
    act = {"w8a8": ("w8a8", None), "fp8": ("fp8", opts.get("block", (0, 0))[1])}.get(method)

    def ref(d):
        m = hf_model(ddir, dtype=d)
        return fake_quant_activations(m, *act) if act else m
    hf_lowp, hf_exact = ref(dtype), ref(dtype).float()
    prompts = random_prompts(zlib.crc32(case.encode()), llm.engine.vocab_size, lengths=(13, 5))
    # Activation quantization turns the dtype's last-bit differences into whole int8 / fp8 steps,
    # in transformers' own low-precision run as well, so its noise (the yardstick) grows alike:
    # correct runs measured 0.8-2.0x of it on the CPU; an InternLM2 with k read as v, 7.8x
    # (fp8), which the old 12x slack let pass.
    assert_close_to_transformers(llm, hf_exact, hf_lowp, prompts, n_tokens=12, slack=4.0)
