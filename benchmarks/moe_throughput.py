"""MoE throughput: DESIGN.md's offline-1000 on a Qwen3-30B-A3B-shaped model, halinfer vs HF transformers.

    python benchmarks/moe_throughput.py --out moe.json              # one GPU, bf16 (the real run)
    python benchmarks/moe_throughput.py --tiny --out moe-tiny.json  # the same pipeline on a tiny shape, any device

Model: Qwen3MoeForCausalLM with 48 layers, hidden 2048, 32 heads, 4 KV heads, head_dim 128,
128 experts, top-8, expert intermediate 768, vocab 151936, random weights (a config.json in a
temporary directory, load_format="dummy"; no checkpoint).
Workload and passes are benchmarks/throughput.py's (called here): 1000 requests from
numpy.random.default_rng(0), inputs 50-400 tokens, outputs 50-350, greedy, ignore EOS, all
submitted at once; a warm-up, a first pass and a steady-state pass.
HF transformers generate() runs in the same process after halinfer has freed the GPU, on the
first --hf-requests requests in batches of --hf-batch (left-padded; each batch generates to its
longest requested output and only the requested tokens count).  Its full-workload wall time is
*extrapolated* as (all 1000 requests' output tokens) / (its output tok/s on that subset); the
JSON labels it so.  Every figure is for the card named in the result.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
    "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
    "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
    "intermediate_size": 6144, "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
    "vocab_size": 151936, "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False, "use_sliding_window": False,
    "sliding_window": None, "max_window_layers": 48, "bos_token_id": 151643, "eos_token_id": 151645,
    "torch_dtype": "bfloat16",
}
# --tiny: the same architecture, small enough for a CPU smoke test of the whole script
TINY = {**QWEN3_30B_A3B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "intermediate_size": 128, "vocab_size": 2048, "max_window_layers": 2,
        "bos_token_id": 0, "eos_token_id": 1}
TINY_ARGS = ["--device", "cpu", "--dtype", "float32", "--num-requests", "12", "--hf-requests", "4",
             "--hf-batch", "4", "--max-num-seqs", "16"]


def summarize(result: dict, n_requests: int) -> dict:
    """halinfer's steady pass vs HF's subset rate, and HF's extrapolated full-workload time."""
    mine = result.get("halinfer", {}).get(f"offline-{n_requests}/steady")
    hf = next((v for k, v in result.get("hf", {}).items() if k.startswith("offline-subset")), None)
    out = {}
    if mine:
        out["halinfer_wall_s"] = mine["wall_s"]
        out["halinfer_output_tok_per_s"] = mine["output_tok_per_s"]
    if mine and hf:
        n_out = mine["output_tokens"]
        out["hf_output_tok_per_s (subset)"] = hf["output_tok_per_s"]
        out["hf_wall_s (EXTRAPOLATED to the full workload)"] = round(n_out / hf["output_tok_per_s"], 1)
        out["speedup (output tok/s)"] = round(mine["output_tok_per_s"] / hf["output_tok_per_s"], 2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--tiny", action="store_true", help="a tiny Qwen3-MoE shape and workload (smoke test)")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args, rest = p.parse_known_args(argv)
    sys.path.insert(0, HERE)
    import throughput  # benchmarks/throughput.py: the workloads, the passes, the HF peer

    cfg = TINY if args.tiny else QWEN3_30B_A3B
    model_dir = tempfile.mkdtemp(prefix="halinfer-moe-bench-")
    raw = os.path.join(model_dir, "result.json")
    try:
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        # Defaults for the real run; anything given on the command line comes later and wins.
        base = ["--model", model_dir, "--workload", "offline-1000", "--peer", "hf", "--max-model-len", "1024",
                "--gpu-memory-utilization", "0.92", "--hf-requests", "64", "--hf-batch", "32"]
        throughput.main(base + (TINY_ARGS if args.tiny else []) + rest + ["--out", raw])
        with open(raw) as f:
            result = json.load(f)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    n = result["args"]["num_requests"]
    result["model"] = "qwen3-moe tiny (smoke test)" if args.tiny else "Qwen3-30B-A3B shape, random weights"
    result["moe_summary"] = summarize(result, n)
    text = json.dumps(result, indent=2)
    print(json.dumps({"moe_summary": result["moe_summary"], "card": result.get("card")}, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
