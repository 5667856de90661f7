"""Collects declared-support results and, when asked, writes the verified records."""
from __future__ import annotations

import datetime
import json
import os

RESULTS: dict[tuple[str, str, str], dict] = {}


def note_result(backend: str, column: str, case: str, ok: bool, dtype: str, kv: str) -> None:
    RESULTS[(backend, column, case)] = {"ok": ok, "dtype": dtype, "kv": kv}


def write_records() -> list[str]:
    """Rows whose every case passed, per backend, into halinfer/support/verified/<backend>.json."""
    if os.environ.get("HALINFER_RECORD_SUPPORT") != "1" or not RESULTS:
        return []
    from halinfer.core.plugin import load_plugins
    from halinfer.support.matrix import VERIFIED_DIR, row_key
    from halinfer.support.seed import SEED_ROWS

    out_dir = os.environ.get("HALINFER_RECORD_DIR", VERIFIED_DIR)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for backend in sorted({k[0] for k in RESULTS}):
        b = load_plugins().backends[backend]
        cells: dict = {}
        for col in sorted({k[1] for k in RESULTS if k[0] == backend}):
            for r in SEED_ROWS:
                res = [RESULTS.get((backend, col, c)) for c in r.cases]
                if r.cases and all(x and x["ok"] for x in res):
                    cells.setdefault(row_key(r), {})[col] = {"cases": list(r.cases), "dtype": res[0]["dtype"],
                                                             "kv_cache_dtype": res[0]["kv"]}
        card = None
        if b.device_type != "cpu":
            try:
                import subprocess

                card = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                      capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
            except Exception:  # noqa: BLE001
                card = None
        rec = {"backend": backend, "how": "hardware", "card": card or b.device_type,
               "date": datetime.date.today().isoformat(),
               "command": "HALINFER_RECORD_SUPPORT=1 python -m pytest tests/models/test_declared_support.py",
               "cells": cells}
        path = os.path.join(out_dir, f"{backend}.json")
        with open(path, "w") as f:
            json.dump(rec, f, indent=1, sort_keys=True)
        written.append(path)
    return written
