"""Collects declared-support results and, when asked, writes the verified records."""
from __future__ import annotations

import datetime
import json
import os

RESULTS: dict[tuple[str, str, str], dict] = {}


def note_result(backend: str, column: str, case: str, ok: bool, dtype: str, kv: str) -> None:
    RESULTS[(backend, column, case)] = {"ok": ok, "dtype": dtype, "kv": kv}


def _merged_results(out_dir: str, backend: str, mine: dict) -> dict:
    """This run's results for ``backend`` merged into those that earlier runs left in
    out_dir (``<backend>.raw``, not a record), so that parallel processes sharing one
    HALINFER_RECORD_DIR (one per case, say) add up to one record.  The caller holds the
    folder's lock."""
    path = os.path.join(out_dir, f"{backend}.raw")
    with open(path, "a+") as f:
        f.seek(0)
        text = f.read()
        merged = {tuple(k.split("\t")): v for k, v in (json.loads(text) if text.strip() else {}).items()}
        merged.update(mine)
        f.seek(0)
        f.truncate()
        json.dump({"\t".join(k): v for k, v in merged.items()}, f, indent=1, sort_keys=True)
    return merged


def write_records() -> list[str]:
    """Rows whose every case passed, per backend, into halinfer/support/verified/<backend>.json
    (or HALINFER_RECORD_DIR, where results of earlier runs into the same folder add up)."""
    if os.environ.get("HALINFER_RECORD_SUPPORT") != "1" or not RESULTS:
        return []
    from halinfer.support.matrix import VERIFIED_DIR

    accumulate = "HALINFER_RECORD_DIR" in os.environ
    out_dir = os.environ.get("HALINFER_RECORD_DIR", VERIFIED_DIR)
    os.makedirs(out_dir, exist_ok=True)
    if accumulate:  # processes sharing the folder may finish at once: one writes at a time
        import fcntl

        with open(os.path.join(out_dir, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _write(out_dir, accumulate)
    return _write(out_dir, accumulate)


def _write(out_dir: str, accumulate: bool) -> list[str]:
    from halinfer.core.plugin import load_plugins
    from halinfer.support.matrix import row_key
    from halinfer.support.seed import SEED_ROWS

    written = []
    for backend in sorted({k[0] for k in RESULTS}):
        b = load_plugins().backends[backend]
        results = {(col, case): v for (bk, col, case), v in RESULTS.items() if bk == backend}
        if accumulate:
            results = _merged_results(out_dir, backend, results)
        cells: dict = {}
        for col in sorted({k[0] for k in results}):
            for r in SEED_ROWS:
                res = [results.get((col, c)) for c in r.cases]
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
