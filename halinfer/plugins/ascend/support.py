"""Which model families the Ascend backend claims, per SoC variant and mode.

Transcribed from the seed matrix (seed/supported_models.zh.md, "PyTorchEngine
其他平台": LMDeploy's results with dlinfer on Atlas 800T A2, Atlas 300I Duo
and Atlas 800T A3).  Every claim here is *declared*: nothing was run on Ascend
hardware for halinfer.  "-" in the seed (not verified there) is left out; "No"
is kept as False.  Families carry the model names of the seed's main list
(halinfer/support/seed.py), so "QWen2(.5)" is declared as both QWen2 and Qwen2.5.  Where this plugin cannot run what the seed lists, the claim
is turned off with a note saying why.
"""
from __future__ import annotations

from halinfer.core.backend import SupportDecl

from .soc import A2, A3, P310, PRODUCT

Y, N, _ = True, False, None

A2_COLS = ("FP16/BF16(eager)", "FP16/BF16(graph)", "W8A8(graph)", "W4A16(eager)")
P310_COLS = ("FP16/BF16(graph)",)     # the seed's column is "FP16(graph)": 300I Duo has no BF16
P310_REFUSED_COLS = ("FP16/BF16(eager)", "W8A8(graph)", "W4A16(eager)")
A3_COLS = ("FP16/BF16(eager)",)

# family: (A2 eager, A2 graph, A2 W8A8 graph, A2 W4A16 eager, 300I Duo FP16 graph, A3 eager)
SEED = {
    "Llama2": (Y, Y, Y, Y, _, Y),
    "Llama3": (Y, Y, Y, Y, Y, Y),
    "Llama3.1": (Y, Y, Y, Y, Y, Y),
    "InternLM2": (Y, Y, Y, Y, Y, Y),
    "InternLM2.5": (Y, Y, Y, Y, Y, Y),
    "InternLM3": (Y, Y, Y, Y, Y, Y),
    "Mixtral": (Y, Y, N, N, Y, _),
    "QWen1.5-MoE": (Y, _, N, N, _, _),
    "QWen2": (Y, Y, Y, Y, Y, _),          # the seed's "QWen2(.5)" row, under both main-list names
    "Qwen2.5": (Y, Y, Y, Y, Y, _),
    "QWen2-VL": (Y, Y, _, _, _, _),
    "QWen2.5-VL": (Y, Y, _, _, Y, _),
    "QWen2-MoE": (Y, _, N, N, _, _),
    "Qwen3": (Y, Y, N, N, Y, Y),
    "DeepSeek-V2": (N, Y, N, N, _, _),
    "InternVL(v1.5)": (Y, _, Y, Y, _, _),
    "InternVL2": (Y, Y, Y, Y, Y, _),
    "InternVL2.5(MPO)": (Y, Y, Y, Y, Y, _),
    "InternVL3": (Y, Y, Y, Y, Y, _),
    "CogVLM2-Chat": (Y, N, _, _, _, _),
    "GLM-4V": (Y, N, _, _, _, _),
}

# What this plugin refuses up front (the engine checks graph_modes and weight_quant before
# loading), per SoC variant and mode or weight format, with the reason (docs/vendors.md).
REFUSED = {
    (P310, "eager"): "decode runs as graphs only on the Atlas 300I Duo (lmdeploy: 300I Duo graph mode only)",
    (P310, "w8a8"): "no per-token W8A8 on the Atlas 300I Duo: npu_quant_matmul takes no pertoken_scale there "
                    "(op-plugin _op_plugin_docs.py, 'Atlas 推理系列加速卡产品: 不支持pertoken_scale')",
    (P310, "awq"): "no group-wise int4 on the Atlas 300I Duo: npu_weight_quant_batchmatmul takes int8 weights, "
                   "per-tensor/per-channel only there (op-plugin _op_plugin_docs.py)",
}


def refusal(variant: str, what: str) -> str | None:
    """Why ``what`` (a graph mode or a weight format) is refused on ``variant``, or None."""
    return REFUSED.get((variant, what))


# Seed claims this plugin cannot honour, with the reason.
NOT_IMPLEMENTED = {
    ("DeepSeek-V2", A2, "FP16/BF16(graph)"):
        "seed: Yes; needs FIA's MLA path (D=512 + rope D=64), which this plugin does not implement",
}


def _decl(family, variant, cols, values) -> SupportDecl | None:
    columns, notes = {}, []
    for col, val in zip(cols, values):
        if val is None:
            continue
        why = NOT_IMPLEMENTED.get((family, variant, col))
        if why and val:
            notes.append(f"{col}: {why}")
            val = False
        columns[col] = val
    if not columns:
        return None
    if variant == P310:   # shown as "no": refused up front (REFUSED), whatever the seed says
        columns.update(dict.fromkeys(P310_REFUSED_COLS, False))
    note = "declared from the seed matrix; not verified on hardware"
    if variant == P310:
        note += "; FP16 only (300I Duo has no BF16); refused: " + "; ".join(
            f"{what}: {why}" for (v, what), why in REFUSED.items() if v == P310)
    if notes:
        note += "; " + "; ".join(notes)
    return SupportDecl(family=family, columns=columns, note=note, variant=PRODUCT[variant])


def declarations() -> list[SupportDecl]:
    out = []
    for family, v in SEED.items():
        for variant, cols, vals in ((A2, A2_COLS, v[0:4]), (P310, P310_COLS, v[4:5]), (A3, A3_COLS, v[5:6])):
            d = _decl(family, variant, cols, vals)
            if d is not None:
                out.append(d)
    return out
