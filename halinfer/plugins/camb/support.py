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


NOTE = ("declared from the seed matrix; not verified on hardware; prefill over a cached prefix relies on paged "
        "flash_attention aligning causal masks bottom-right (an inference: no TMO source states it)")
MOE_NOTE = ("; MoE relies on inferred torch_mlu_ops semantics: moe_gen_idx's index meanings and moe_active "
            "writing its result into output[:, :I] (callers show them, no TMO doc does)")
MOE_FAMILIES = ("Mixtral",)


def declarations() -> list[SupportDecl]:
    return [SupportDecl(family=f, columns={COLUMN: v}, note=NOTE + (MOE_NOTE if f in MOE_FAMILIES else ""))
            for f, v in SEED.items()]


# Weight formats refused up front (the engine checks Backend.weight_quant), with the reason.
REFUSED = {
    "awq": "W4A16: torch_mlu_ops' weight_only_quant_matmul int4 nibble order is documented nowhere we found "
           "(vllm-mlu packs 2 per int8 without saying which nibble is first)",
    "w8a8": "W8A8: this torch_mlu_ops exports neither scaled_quantize/scaled_matmul (1.12.1) nor "
            "per_token_smooth_quantize/smooth_quant_matmul (1.5.0)",
}


def refusal(what: str) -> str | None:
    return REFUSED.get(what)
