"""Model families the Cambricon backend claims: the seed matrix's "Cambricon BF/FP16"
column (LMDeploy + dlinfer results).  Declared only; nothing ran on an MLU for
halinfer.  "-" is left out, "No" kept as False.  Names follow the seed's main list
(halinfer/support/seed.py): "QWen2(.5)" is QWen2 and Qwen2.5."""
from __future__ import annotations

from halinfer.core.backend import SupportDecl

COLUMN = "FP16/BF16"
SEED = {
    "Llama2": True, "Llama3": True, "Llama3.1": True, "InternLM2": True, "InternLM2.5": True,
    "InternLM3": True, "Mixtral": True, "QWen2": True, "Qwen2.5": True, "QWen2-VL": False, "QWen2.5-VL": False,
    "Qwen3": True, "InternVL2": True, "InternVL2.5(MPO)": True, "InternVL3": True,
}


def declarations() -> list[SupportDecl]:
    return [SupportDecl(family=f, columns={COLUMN: v}, note="declared from the seed matrix; not verified on hardware")
            for f, v in SEED.items()]
