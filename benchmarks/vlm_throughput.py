"""Vision-language throughput (issue 15): a Qwen2.5-VL-3B-shaped or InternVL-2B-shaped model
with random weights; N requests of one 448x448 image plus 64 text tokens each, 128 output
tokens, greedy, ignore EOS; halinfer beside HF transformers (and LMDeploy when importable)
in the same run, on the same saved checkpoint.

    python benchmarks/vlm_throughput.py --shape qwen2.5-vl-3b --device cuda --requests 200 \
        --hf-requests 32 --hf-batch 16 --out vlm.json

Each request has its own random image (no prefix sharing between requests).  The model is
saved once (bf16, random weights) with its processor settings and a small tokenizer that
carries the family's image tokens; both engines load that directory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {
    # Qwen2.5-VL-3B-Instruct's published shape
    "qwen2.5-vl-3b": dict(
        family="qwen2.5-vl",
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                    spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=2048,
                    fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu")),
    # InternVL2-2B / InternVL2.5-2B: InternViT-300M (24 layers, 1024) + a 2B text model (Qwen2-shaped here)
    "internvl-2b": dict(
        family="internvl",
        text=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
                  num_key_value_heads=8, vocab_size=92553, max_position_embeddings=32768, rms_norm_eps=1e-5),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=448, patch_size=14, use_mean_pooling=True, hidden_act="gelu",
                    layer_norm_eps=1e-6)),
}


def save_model(shape: str, path: str) -> str:
    import transformers as t

    from halinfer.testing.tiny_vlm import SAVERS, _save_processor_parts, _tokenizer

    if shape.startswith("tiny-"):   # a smoke run of this script on any machine
        return SAVERS[shape[5:]](path)
    s = SHAPES[shape]
    if s["family"] == "qwen2.5-vl":
        specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
        tok = _tokenizer(path, specials)
        ids = {x: tok.convert_tokens_to_ids(x) for x in specials}
        cfg = t.Qwen2_5_VLConfig(text_config=s["text"], vision_config=s["vision"], tie_word_embeddings=True,
                                 image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                                 vision_start_token_id=ids["<|vision_start|>"],
                                 vision_end_token_id=ids["<|vision_end|>"])
        cls, ip = t.Qwen2_5_VLForConditionalGeneration, t.Qwen2VLImageProcessor()
        ip_type, proc, extra = "Qwen2VLImageProcessor", "Qwen2VLProcessor", {}
    else:
        tok = _tokenizer(path, ["<img>", "</img>", "<IMG_CONTEXT>"])
        cfg = t.InternVLConfig(vision_config=s["vision"], text_config=t.Qwen2Config(**s["text"]).to_dict(),
                               image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
                               vision_feature_layer=-1, vision_feature_select_strategy="default")
        cls = t.InternVLForConditionalGeneration
        ip = t.GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=False)
        ip_type, proc, extra = "GotOcr2ImageProcessor", "InternVLProcessor", {"image_seq_length": 256}
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = cls(cfg).to(torch.bfloat16)
    model.save_pretrained(path)
    _save_processor_parts(path, ip, tok, ip_type, proc, **extra)
    return path


def workload(path: str, family: str, n: int, seed: int = 0):
    """Prompts as halinfer takes them: 32 random text token ids, the image placeholder, 32 more
    (every prompt the same length, so transformers batches them without padding)."""
    from PIL import Image
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    marks = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"] if family == "qwen2.5-vl" else ["<IMG_CONTEXT>"]
    ph = tok.convert_tokens_to_ids(marks)
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        img = Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))
        ids = rng.integers(20, 350, 32).tolist() + ph + rng.integers(20, 350, 32).tolist()
        prompts.append({"prompt_token_ids": ids, "multi_modal_data": {"image": img}})
    return prompts


def hf_inputs(path: str, prompt: dict) -> dict:
    """transformers' inputs for one prompt: halinfer's front end expands it (the tests check
    that its ids and pixels equal transformers' processor output)."""
    from halinfer.core.config import ModelConfig
    from halinfer.engine.multimodal import MultimodalProcessor
    from transformers import AutoTokenizer

    mp = MultimodalProcessor(path, ModelConfig.from_dir(path), AutoTokenizer.from_pretrained(path))
    ids, (mm,) = mp.apply(prompt["prompt_token_ids"], mp.load(prompt["multi_modal_data"]["image"]))
    return {"input_ids": torch.tensor([ids]), **mm.data}


def run_halinfer(path, prompts, out_len, device, max_num_seqs):
    from halinfer import LLM, SamplingParams

    kw = {"num_kv_blocks": 256} if device == "cpu" else {}
    llm = LLM(path, device=device, dtype="bfloat16", max_num_seqs=max_num_seqs, max_model_len=512 if device == "cpu" else 2048, **kw)
    sp = SamplingParams(temperature=0, max_tokens=out_len, ignore_eos=True)
    llm.generate(prompts[:4], sp, use_tqdm=False)        # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    wall = time.perf_counter() - t0
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    prompt_toks = sum(len(o.prompt_token_ids) for o in outs)
    res = {"wall_s": wall, "output_tok_s": gen / wall, "total_tok_s": (gen + prompt_toks) / wall,
           "req_s": len(outs) / wall, "prompt_tokens_per_request": prompt_toks / len(outs)}
    llm.shutdown()
    return res


@torch.inference_mode()
def run_hf(path, prompts, out_len, batch, device):
    from halinfer.testing.hf_vlm import _with_token_types
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.bfloat16).to(device).eval()
    t0, gen = time.perf_counter(), 0
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        parts = [hf_inputs(path, p) for p in chunk]
        # every prompt of the workload has the same length: stack without padding
        inputs = {k: torch.cat([x[k] for x in parts]).to(device) for k in parts[0]}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        inputs = _with_token_types(model, inputs)
        ids = inputs["input_ids"]
        out = model.generate(**inputs, attention_mask=torch.ones_like(ids), max_new_tokens=out_len, do_sample=False,
                             min_new_tokens=out_len, pad_token_id=0)
        gen += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    wall = time.perf_counter() - t0
    return {"requests": len(prompts), "batch": batch, "wall_s": wall, "output_tok_s": gen / wall,
            "req_s": len(prompts) / wall}


def run_lmdeploy():
    """LMDeploy reads its own model layouts and tokenizers; this script does not drive it yet."""
    try:
        import lmdeploy   # noqa: F401
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"lmdeploy not importable: {type(e).__name__}: {e}"}
    return {"skipped": "lmdeploy is importable, but this script has no LMDeploy harness for the saved model yet"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES) + ["tiny-qwen2.5-vl", "tiny-internvl"], default="qwen2.5-vl-3b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--hf-requests", type=int, default=32)
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--model-dir", help="reuse a directory saved by an earlier run")
    ap.add_argument("--out")
    a = ap.parse_args()
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    path = a.model_dir or save_model(a.shape, tempfile.mkdtemp(prefix="vlm-bench-"))
    family = a.shape[5:] if a.shape.startswith("tiny-") else SHAPES[a.shape]["family"]
    prompts = workload(path, family, a.requests)
    res = {"card": card, "shape": a.shape, "requests": a.requests, "image": "448x448", "text_tokens": 64,
           "output_len": a.output_len, "model_dir": path}
    res["halinfer"] = run_halinfer(path, prompts, a.output_len, a.device, a.max_num_seqs)
    print(json.dumps(res["halinfer"]), flush=True)
    if a.hf_requests:
        res["hf"] = run_hf(path, prompts[:a.hf_requests], a.output_len, a.hf_batch, a.device)
        res["ratio_output_tok_s"] = res["halinfer"]["output_tok_s"] / res["hf"]["output_tok_s"]
    res["lmdeploy"] = run_lmdeploy()
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
