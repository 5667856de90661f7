"""Model families the MACA backend claims: the seed matrix's "Maca C500 BF/FP16" column
(LMDeploy + dlinfer results).  Declared only; nothing ran on a MetaX GPU for halinfer.
"-" is left out.  Names follow the seed's main list (halinfer/support/seed.py):
"QWen2(.5)" is QWen2 and Qwen2.5."""
from __future__ import annotations

from halinfer.core.backend import SupportDecl

COLUMN = "FP16/BF16"
SEED = ("Llama2", "Llama3", "Llama3.1", "InternLM2", "InternLM2.5", "InternLM3", "Mixtral", "QWen1.5-MoE",
        "QWen2", "Qwen2.5", "QWen2-VL", "QWen2.5-VL", "QWen2-MoE", "Qwen3", "InternVL(v1.5)", "InternVL2",
        "InternVL2.5(MPO)", "InternVL3", "CogVLM2-Chat")


def declarations() -> list[SupportDecl]:
    return [SupportDecl(family=f, columns={COLUMN: True}, variant="MetaX C500",
                        note="declared from the seed matrix (C500); not verified on hardware") for f in SEED]
