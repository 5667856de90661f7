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
