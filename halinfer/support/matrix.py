"""The support matrix: each backend's claims, checked against what halinfer
implements and what tests have shown.

A cell is one of:
  verified   a test of the row's cases passed on this backend's hardware (record in verified/)
  emulated   the test passed through emulated vendor operators on the CPU (no hardware)
  declared   the backend claims it and halinfer implements the model, but no test record exists
  no-impl    the backend's vendor lists it, but halinfer has no implementation of the model
  no         the backend says it is not supported
  -          no claim
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..core.backend import SUPPORT_COLUMNS, Backend, SupportDecl, quant_columns
from .seed import SEED_ROWS, SeedRow

VERIFIED_DIR = os.path.join(os.path.dirname(__file__), "verified")
MARKS = {"verified": "Yes (verified)", "emulated": "Yes (emulated)", "declared": "declared",
         "no-impl": "not implemented", "no": "No", "-": "-", "ops": "ops only (no model test)"}


def row_key(r: SeedRow) -> str:
    return f"{r.model}|{r.size}"


def load_records(backend_name: str) -> dict:
    """{"how": "hardware"|"emulation", "cells": {row_key: {column: {...}}}} merged over record files."""
    merged: dict = {"cells": {}}
    if not os.path.isdir(VERIFIED_DIR):
        return merged
    for name in sorted(os.listdir(VERIFIED_DIR)):
        if not (name.startswith(backend_name + ".") or name.startswith(backend_name + "-")) \
                or not name.endswith(".json"):
            continue
        with open(os.path.join(VERIFIED_DIR, name)) as f:
            rec = json.load(f)
        for key, cols in rec.get("cells", {}).items():
            for col, info in cols.items():
                merged["cells"].setdefault(key, {})[col] = {**info, "how": rec.get("how", "hardware"),
                                                            "record": name}
    return merged


def _decl_for(decls: list[SupportDecl], r: SeedRow, variant: str) -> SupportDecl | None:
    for d in decls:
        if d.family in (r.model, f"{r.model} {r.size}") and d.variant == variant:
            return d
    return None


def columns_of(decls: list[SupportDecl]) -> list[str]:
    cols: list[str] = []
    for d in decls:
        for c in d.columns:
            if c not in cols:
                cols.append(c)
    return cols or list(SUPPORT_COLUMNS)


def cell(backend: Backend, decl: SupportDecl | None, r: SeedRow, column: str, records: dict,
         variant: str = "") -> str:
    claim = None if decl is None else decl.columns.get(column)
    if claim is False:
        # Not claimed for the row, but the backend implements the mode (halinfer devices lists it).
        return "ops" if column in quant_columns(backend.weight_quant, backend.kv_cache_dtypes) else "no"
    if claim is None:
        return "-"
    if not r.cases:
        return "no-impl"
    # A record may name the hardware variant it ran as ("<variant>|<column>").
    cols = records["cells"].get(row_key(r), {})
    rec = cols.get(f"{variant}|{column}") or cols.get(column)
    if rec:
        return "emulated" if rec["how"] == "emulation" else "verified"
    if decl is not None and column in decl.hardware_verified:
        return "verified"
    return "declared"


def mark(kind: str, r: SeedRow) -> str:
    """The printed cell; a "Yes" on an MLLM row without vision cases covers its text model only."""
    text = MARKS[kind]
    text_only = not any(c.startswith("vlm:") for c in r.cases)
    if r.type == "MLLM" and text_only and kind in ("verified", "emulated", "declared"):
        text = text[:-1] + ", text only)" if text.endswith(")") else text + " (text only)"
    return text


def variants_of(decls: list[SupportDecl]) -> list[str]:
    out: list[str] = []
    for d in decls:
        if d.variant not in out:
            out.append(d.variant)
    return out or [""]


def table(backend: Backend, llm_only: bool = False) -> list[tuple[str, list[str], list[list[str]]]]:
    """[(variant, header, rows)] for a backend, rows in the seed's format."""
    decls = backend.support()
    records = load_records(backend.name)
    out = []
    for variant in variants_of(decls):
        vdecls = [d for d in decls if d.variant == variant]
        cols = columns_of(vdecls)
        rows = []
        for r in SEED_ROWS:
            if llm_only and r.type != "LLM":
                continue
            d = _decl_for(vdecls, r, variant)
            rows.append([r.model, r.size, r.type] + [mark(cell(backend, d, r, c, records, variant), r) for c in cols])
        out.append((variant, ["Model", "Size", "Type"] + cols, rows))
    return out


def render_markdown(backend: Backend, llm_only: bool = False) -> str:
    parts = []
    for variant, header, rows in table(backend, llm_only):
        title = f"### {backend.name}" + (f" — {variant}" if variant else "")
        lines = [title, "", "| " + " | ".join(header) + " |", "|" + "|".join(":-:" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        parts.append("\n".join(lines))
    legend = ("verified: a test of the row's cases passed on this backend; emulated: passed through emulated "
              "vendor operators on the CPU; declared: claimed, not yet tested here; not implemented: the vendor "
              "lists it but halinfer has no implementation; ops only: the backend implements the mode (its operators "
              "pass the conformance suite) but no test of the row's models ran in it; text only: the text model of a multimodal row (no vision "
              "encoder); -: no claim")
    return "\n\n".join(parts) + "\n\n" + legend + "\n"
