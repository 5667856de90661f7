"""`halinfer support`: claims are checked against implemented rows and test records."""
from __future__ import annotations

import json
import subprocess
import sys

from halinfer.core.backend import Backend, SupportDecl
from halinfer.support import matrix
from halinfer.support.seed import SEED_ROWS, row
from halinfer.testing.cases import CASES
from halinfer.testing.vlm_cases import VLM_CASES


def test_every_seed_row_names_existing_cases():
    for r in SEED_ROWS:
        known = set(CASES) | set(VLM_CASES)
        assert set(r.cases) <= known, f"{r.model}: unknown case(s) {set(r.cases) - known}"


class _Fake(Backend):
    name = "fakehw"

    def support(self):
        return [SupportDecl("Llama3", {"FP16/BF16": True, "KV INT8": True, "W8A8": False}),
                SupportDecl("Molmo", {"FP16/BF16": True})]


def test_cells_distinguish_verified_emulated_declared_unimplemented_and_no(tmp_path, monkeypatch):
    monkeypatch.setattr(matrix, "VERIFIED_DIR", str(tmp_path))
    key = matrix.row_key(row("Llama3"))
    (tmp_path / "fakehw.json").write_text(json.dumps({"how": "hardware", "cells": {key: {"FP16/BF16": {}}}}))
    (tmp_path / "fakehw-emulated.json").write_text(json.dumps({"how": "emulation", "cells": {key: {"KV INT8": {}}}}))
    b = _Fake()
    recs = matrix.load_records("fakehw")
    llama3, molmo = row("Llama3"), row("Molmo")
    decl = {d.family: d for d in b.support()}
    assert matrix.cell(b, decl["Llama3"], llama3, "FP16/BF16", recs) == "verified"
    assert matrix.cell(b, decl["Llama3"], llama3, "KV INT8", recs) == "emulated"
    assert matrix.cell(b, decl["Llama3"], llama3, "W8A8", recs) == "no"
    assert matrix.cell(b, decl["Llama3"], llama3, "W4A16", recs) == "-"
    assert matrix.cell(b, decl["Molmo"], molmo, "FP16/BF16", recs) == "no-impl"
    (tmp_path / "fakehw.json").unlink()
    assert matrix.cell(b, decl["Llama3"], llama3, "FP16/BF16", matrix.load_records("fakehw")) == "declared"


def test_cli_prints_every_backend_in_the_seed_format():
    out = subprocess.run([sys.executable, "-m", "halinfer.cli", "support", "--llm-only"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    for name in ("## cpu", "## cuda", "## ascend", "## camb", "## maca"):
        assert name in out
    assert "| Model | Size | Type | FP16/BF16 | KV INT8 | KV INT4 | W8A8 | W4A16 |" in out
    assert "Atlas 300I Duo" in out and "Yes (verified)" in out


def test_multimodal_rows_claim_only_their_text_model(tmp_path, monkeypatch):
    """Llama4 is an MLLM row whose text model halinfer implements: a claim shows as text only,
    never as a plain Yes, and a row without cases stays not implemented.  Gemma3 runs images
    (a vision case): the whole model."""
    from halinfer.core.plugin import load_plugins

    monkeypatch.setattr(matrix, "VERIFIED_DIR", str(tmp_path))
    cpu = load_plugins().backends["cpu"]
    by_model = {r[0]: r for _, _, rows in matrix.table(cpu) for r in rows}
    for name in ("Llama4",):
        assert row(name).type == "MLLM" and row(name).cases
        assert by_model[name][3] == "declared (text only)"
    assert by_model["Llama3.2-VL"][3] == "-"          # no cases: not claimed at all
    assert by_model["Llama3"][3] == "declared"        # an LLM row carries no such mark
    assert by_model["QWen2-VL"][3] == "declared"      # vision cases: the whole model
    assert by_model["Gemma3"][3] == "declared"
