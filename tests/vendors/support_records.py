"""Emulation records for `halinfer support`: which seed cells the emulated model runs back.

With HALINFER_RECORD_SUPPORT=1, the passing runs of test_models_emulated.py are written
to halinfer/support/verified/<backend>-emulated.json ("how": "emulation"), one entry per
seed row the tiny model stands for, keyed "<variant>|<column>".  Nothing here claims
hardware: the matrix shows these cells as "Yes (emulated)".
"""
from __future__ import annotations

import datetime
import json
import os

# tiny model id -> the seed rows (model names) whose computation it exercises
ROWS = {
    "llama-d128": ("Llama2", "Llama3", "Llama3.1"),
    "qwen3-d64": ("Qwen3",),
    "mixtral-d64": ("Mixtral",),
    # vision-language (tests/vendors/test_vlm_emulated.py)
    "qwen2-vl-d64": ("QWen2-VL",),
    "qwen2.5-vl-d64": ("QWen2.5-VL",),
    "internvl-d64": ("InternVL2", "InternVL2.5(MPO)", "InternVL3"),
}
RESULTS: list[dict] = []


def note(backend, model_id: str, mode: str, dtype: str, column: str | None = None) -> None:
    """column: the support column the run backs (default: FP16/BF16 in the run's mode)."""
    variant = backend.variant()
    named = {d.variant for d in backend.support()}
    if not variant and len(named) == 1:
        variant = named.pop()  # one variant only (MetaX C500)
    RESULTS.append({"backend": backend.name, "variant": variant, "model": model_id, "mode": mode, "dtype": dtype,
                    "column": column})


def _column(backend_name: str, mode: str, decl_columns: set[str]) -> str | None:
    for c in (f"FP16/BF16({mode})", "FP16/BF16"):
        if c in decl_columns:
            return c
    return None


def write_records() -> list[str]:
    if os.environ.get("HALINFER_RECORD_SUPPORT") != "1" or not RESULTS:
        return []
    from halinfer.core.plugin import load_plugins
    from halinfer.support.matrix import VERIFIED_DIR, row_key
    from halinfer.support.seed import SEED_ROWS

    written = []
    for name in sorted({r["backend"] for r in RESULTS}):
        decls = load_plugins().backends[name].support()
        cells: dict = {}
        for res in (r for r in RESULTS if r["backend"] == name):
            vdecls = [d for d in decls if d.variant == res["variant"]]
            col = res["column"] or _column(name, res["mode"], {c for d in vdecls for c in d.columns})
            if col is None:
                continue
            for model in ROWS[res["model"]]:
                row = next(r for r in SEED_ROWS if r.model == model)
                cells.setdefault(row_key(row), {})[f"{res['variant']}|{col}"] = {
                    "tiny_model": res["model"], "mode": res["mode"], "dtype": res["dtype"]}
        rec = {"backend": name, "how": "emulation", "date": datetime.date.today().isoformat(),
               "command": "HALINFER_RECORD_SUPPORT=1 python -m pytest tests/vendors/test_models_emulated.py -m ''",
               "note": "pure-torch emulation of the vendor operators on the CPU (tests/vendors/emulation); "
                       "no vendor hardware", "cells": cells}
        path = os.path.join(VERIFIED_DIR, f"{name}-emulated.json")
        with open(path, "w") as f:
            json.dump(rec, f, indent=1, sort_keys=True)
        written.append(path)
    return written
