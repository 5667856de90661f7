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


# Cases whose families load every quantized weight format (AWQ, GPTQ, W8A8, FP8) as published:
# separate or fused decoder linears (fused ones split by models/fused.py), MoE experts
# (dequantized at load: models/moe.py).  Not here: MLA families (their latent projections are
# not quantized by the tests' writer), gpt-oss (its stacked experts stay dense there),
# DeepSeek-MoE (tested through a converter that rescales weights, which has no way back to
# the reference).  Rows made only of these carry the quantized weight columns;
# tests/models/test_declared_support.py runs each claimed cell.  Quantized KV caches depend
# on no weight format: every implemented row carries them.
QUANT_CASES = frozenset({
    "llama", "llama3-rope", "llama3.2-tied", "codellama-rope-theta", "qwen2-tied", "qwen2-sliding-window",
    "mistral-sliding-window", "gemma", "gemma2-softcap-sliding", "gemma3-text", "internlm", "internlm2", "internlm3",
    "baichuan-7b", "baichuan2-7b", "baichuan2-13b-alibi", "chatglm2", "glm4-chatglm", "glm4-hf", "glm4-0414",
    "qwen-v1", "qwen3-qk-norm", "starcoder2", "phi3-longrope-sliding", "phi4-mini-partial-rotary",
    "mixtral", "qwen2-moe", "qwen3-moe", "phi3.5-moe", "glm4.5-moe", "llama4-text"})


# The cases whose quantized cells (weight formats and KV INT4) a GPU run has verified on the
# cuda plugin (H200, 2026-12-04).  The cuda plugin claims only these; the rest of QUANT_CASES,
# and KV INT4 on the other rows, are its candidates until a GPU run passes them:
# `HALINFER_CANDIDATE_CLAIMS="cuda:W4A16,cuda:W8A8,cuda:FP8,cuda:KV INT4"` runs them
# (benchmarks/gpu_perf_probe.sh cells), and the passing cases move here.
CUDA_VERIFIED_QUANT_CASES = frozenset({"llama", "llama3-rope", "llama3.2-tied", "qwen2-tied", "qwen2-sliding-window",
                                       "mistral-sliding-window", "gemma"})


def _rows_of(d: SupportDecl):
    return [r for r in SEED_ROWS if d.family in (r.model, f"{r.model} {r.size}") and r.cases]


def quant_rows(decls: list[SupportDecl], columns: dict[str, bool], cases: frozenset = QUANT_CASES,
               kv_int4_cases: frozenset | None = None) -> list[SupportDecl]:
    """``decls`` with ``columns`` (quantized GEMM modes) added to the rows whose cases are all
    in ``cases``; with ``kv_int4_cases``, a "KV INT4" claim stays only on rows made of those."""
    out = []
    for d in decls:
        rows = _rows_of(d)
        cols = dict(d.columns)
        if kv_int4_cases is not None and not (rows and all(set(r.cases) <= kv_int4_cases for r in rows)):
            cols.pop("KV INT4", None)
        if rows and all(set(r.cases) <= cases for r in rows):
            cols.update(columns)
        out.append(SupportDecl(family=d.family, variant=d.variant, columns=cols,
                               hardware_verified=d.hardware_verified))
    return out
