"""Claims for backends that run every model halinfer implements (cpu, cuda)."""
from __future__ import annotations

from ..core.backend import SupportDecl
from .seed import SEED_ROWS


def implemented_rows(columns: dict[str, bool]) -> list[SupportDecl]:
    """One SupportDecl per implemented row, claiming ``columns`` (for an MLLM row: its text
    model, which is all halinfer implements; the matrix marks those cells "text only")."""
    return [SupportDecl(family=r.model if sum(x.model == r.model for x in SEED_ROWS) == 1 else f"{r.model} {r.size}",
                        columns=dict(columns))
            for r in SEED_ROWS if r.cases]


# Cases whose families load every quantized format (plain per-projection linears, no fused
# checkpoint matrices, no MoE experts): the rows made only of these carry the quantized
# columns.  tests/models/test_declared_support.py runs each claimed cell.
QUANT_CASES = frozenset({"llama", "llama3-rope", "llama3.2-tied", "qwen2-tied", "qwen2-sliding-window",
                         "mistral-sliding-window", "gemma"})


def quant_rows(decls: list[SupportDecl], columns: dict[str, bool]) -> list[SupportDecl]:
    """``decls`` with ``columns`` (quantized GEMM / KV modes) added to the rows whose cases
    are all in QUANT_CASES; columns a caller already set to True stay only on those rows."""
    out = []
    for d in decls:
        rows = [r for r in SEED_ROWS if d.family in (r.model, f"{r.model} {r.size}") and r.cases]
        ok = bool(rows) and all(set(r.cases) <= QUANT_CASES for r in rows)
        cols = {c: v for c, v in d.columns.items() if not (v and c == "KV INT4" and not ok)}
        if ok:
            cols.update(columns)
        out.append(SupportDecl(family=d.family, variant=d.variant, columns=cols,
                               hardware_verified=d.hardware_verified))
    return out
