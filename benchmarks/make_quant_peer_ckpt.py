"""Quantized copies of a bf16 Llama-style checkpoint, in layouts that both LMDeploy 0.18's
PyTorch engine and halinfer load. benchmarks/peer_quant.sh uses it. The weights are plain
round-to-nearest with no calibration: the runs measure speed, not accuracy.

    python3 benchmarks/make_quant_peer_ckpt.py --src /tmp/peer-llama --dst /tmp/peer-llama-awq --format awq
    python3 benchmarks/make_quant_peer_ckpt.py --src /tmp/peer-llama --dst /tmp/peer-llama-w8a8 --format w8a8

Only the decoder layers' q/k/v/o/gate/up/down projections are quantized. Embeddings,
lm_head and norms stay floating point, as AutoAWQ and LMDeploy's smooth_quant leave them.

awq   AutoAWQ "gemm", 4-bit, group 128, zero point (min/max of each group). Per projection:
      qweight int32 [in, out/8], qzeros int32 [in/g, out/8] (nibble i of word c is output
      8c + (0,2,4,6,1,3,5,7)[i]), scales float16 [in/g, out]. The other tensors are float16,
      as AutoAWQ saves them. quantization_config = {quant_method: awq, bits: 4, group_size,
      version: gemm, zero_point: true, modules_to_not_convert: null}; torch_dtype float16.
      LMDeploy reads this in lmdeploy/pytorch/nn/linear/awq.py (AwqLinear.create_weights), and
      halinfer in halinfer/models/quant_linear.py (AwqMethod).
w8a8  LMDeploy smooth_quant: ``weight`` int8 [out, in] and ``scale`` float32 [out, 1] per
      projection. The scale is the row's absmax / 127, as
      lmdeploy/pytorch/kernels/default/w8a8_kernels.py:per_channel_quant computes it, and
      QLinear.from_float (lmdeploy/pytorch/models/q_modules.py) stores it under that name.
      The RMSNorms keep only ``weight``: QRMSNorm and the engine's W8A8 RMSNorm have no other
      parameter, and they quantize their output at run time. The other tensors stay bf16.
      quantization_config = {quant_method: smooth_quant, quant_dtype: int8}, which is what
      lmdeploy/lite/apis/smooth_quant.py writes for Llama. Shards are safetensors, as that
      0.18 script saves them (safe_serialization=True). halinfer maps ``scale`` to
      ``weight_scale`` (halinfer/core/loader.py: lmdeploy_smooth_quant_names).

The conversion runs on --device (cuda by default, falling back to cpu) one source shard at a time,
one tensor at a time, so host memory holds at most one output shard. The output is written
to DST.partial and renamed to DST when complete. An existing DST is reused unless --force is given.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from halinfer.core.ops.quant import awq_dequantize, awq_pack  # noqa: E402
from halinfer.quantize.grid import quantize_groups  # noqa: E402

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def is_projection(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 3 and parts[-1] == "weight" and parts[-2] in PROJ and ".layers." in name


def awq_tensors(w: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """w [N, K] -> AutoAWQ GEMM tensors (qweight [K, N/8], qzeros [K/g, N/8], scales fp16 [K/g, N])."""
    q, scale, zero, _ = quantize_groups(w.float(), 4, group)        # q [N, K], scale/zero [N, K/g]
    return {"qweight": awq_pack(q.t()), "qzeros": awq_pack(zero.t()), "scales": scale.t().half().contiguous()}


def w8a8_tensors(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """w [N, K] -> LMDeploy QLinear tensors: int8 weight [N, K], float32 scale [N, 1]."""
    wf = w.float()
    scale = (wf.abs().amax(1, keepdim=True) / 127).clamp(min=1e-12)
    q = torch.round(wf / scale).clamp(-128, 127).to(torch.int8)
    return {"weight": q, "scale": scale}


def quant_config(fmt: str, group: int) -> dict:
    if fmt == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm", "zero_point": True,
                "modules_to_not_convert": None}
    return {"quant_method": "smooth_quant", "quant_dtype": "int8"}


def source_shards(src: str) -> list[str]:
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    if os.path.isfile(os.path.join(src, "model.safetensors")):
        return ["model.safetensors"]
    sys.exit(f"{src}: no model.safetensors or model.safetensors.index.json")


def check_one(fmt: str, w: torch.Tensor, out: dict[str, torch.Tensor], group: int) -> str:
    """How far the stored tensors, decoded, lie from w, in units of each element's quantization step."""
    wf = w.float()
    if fmt == "awq":
        dense = awq_dequantize(out["qweight"], out["scales"].float(), out["qzeros"], group).t()   # [N, K]
        step = out["scales"].float().t().repeat_interleave(group, 1)
    else:
        dense = out["weight"].float() * out["scale"]
        step = out["scale"].expand_as(wf)
    err = ((dense - wf).abs() / step).max().item()
    return f"max |decoded - original| = {err:.3f} quantization steps"


def convert(src: str, dst: str, fmt: str, group: int, device: str) -> None:
    t0 = time.time()
    part = dst + ".partial"
    shutil.rmtree(part, ignore_errors=True)
    os.makedirs(part)
    other_dtype = torch.float16 if fmt == "awq" else torch.bfloat16   # AutoAWQ saves fp16; smooth_quant the model's
    quantize = (lambda w: awq_tensors(w, group)) if fmt == "awq" else w8a8_tensors
    shards = source_shards(src)
    weight_map, total, n_q, checked = {}, 0, 0, None
    for si, shard in enumerate(shards):
        t = time.time()
        out: dict[str, torch.Tensor] = {}
        with safe_open(os.path.join(src, shard), framework="pt", device=device) as f:
            for name in f.keys():
                w = f.get_tensor(name)
                if is_projection(name):
                    if fmt == "awq" and (w.shape[1] % group or w.shape[0] % 8):
                        sys.exit(f"{name} {tuple(w.shape)}: AWQ needs in % {group} == 0 and out % 8 == 0")
                    q = quantize(w)
                    if checked is None:
                        checked = f"{name}: " + check_one(fmt, w, q, group)
                    base = name[: -len(".weight")]
                    for leaf, v in q.items():
                        out[f"{base}.{leaf}"] = v.cpu()
                    n_q += 1
                else:
                    out[name] = (w.to(other_dtype) if w.is_floating_point() else w).cpu().contiguous()
                del w
        fname = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(out, os.path.join(part, fname), metadata={"format": "pt"})
        for k, v in out.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
        print(f"shard {si + 1}/{len(shards)} {shard} -> {fname}: {len(out)} tensors in {time.time() - t:.1f}s",
              flush=True)
        del out
    with open(os.path.join(part, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = quant_config(fmt, group)
    dt = "float16" if fmt == "awq" else "bfloat16"
    for key in [k for k in ("dtype", "torch_dtype") if k in cfg] or ["torch_dtype"]:   # transformers 5 writes dtype
        cfg[key] = dt
    with open(os.path.join(part, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in os.listdir(src):   # tokenizer, generation config
        p = os.path.join(src, name)
        if os.path.isfile(p) and name != "config.json" and not name.endswith((".safetensors", ".bin")) \
                and name not in WEIGHT_FILES:
            shutil.copy(p, os.path.join(part, name))
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(part, dst)
    print(f"{fmt}: {n_q} projections quantized, {total / 2**30:.2f} GiB written to {dst} "
          f"in {time.time() - t0:.1f}s on {device}; check {checked}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--format", required=True, choices=("awq", "w8a8"))
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--force", action="store_true", help="rebuild DST even if it exists")
    a = p.parse_args(argv)
    if os.path.isfile(os.path.join(a.dst, "config.json")) and not a.force:
        with open(os.path.join(a.dst, "config.json")) as f:
            have = json.load(f).get("quantization_config")
        if have == quant_config(a.format, a.group_size):
            print(f"{a.dst} exists with the same quantization_config: reused (--force rebuilds)", flush=True)
            return
    if a.device == "cuda":   # safetensors wants an indexed device
        a.device = f"cuda:{torch.cuda.current_device()}"
    with torch.no_grad():
        convert(a.src, a.dst, a.format, a.group_size, a.device)


if __name__ == "__main__":
    main()
