"""Tiny quantized checkpoints for tests, in the layouts the formats publish, and their
dequantized dense twins (what transformers runs as the reference).

Packing here is written from the layout facts, value by value, independently of the
loader's unpacking in halinfer/core/ops, so a wrong unpack fails the model tests:
  AWQ   qweight [K, N/8]: nibble i of column c is output 8c + (0,2,4,6,1,3,5,7)[i]
  GPTQ  qweight [K*b/32, N]: value i of row r is input (32/b)r + i; qzeros [G, N*b/32]
        value i of column c is output (32/b)c + i, stored zero - 1 (v1) or zero (v2)
  W8A8  compressed-tensors int-quantized: int8 [N, K], weight_scale [N, 1]; LMDeploy's
        smooth_quant: the same int8 weight with a float32 ``scale`` [N, 1], in pytorch_model.bin
  pack  compressed-tensors pack-quantized: weight_packed int32 [N, K*b/32], value i of word c is
        input (32/b)c + i, stored as the signed code + 2^(b-1); weight_scale [N, G];
        weight_zero_point (asymmetric) int32 [N*b/32, G], value i of row r is output (32/b)r + i,
        the same offset; weight_g_idx [K] (actorder "group"); weight_shape [N, K]
  FP8   block: e4m3 [N, K], weight_scale_inv [ceil(N/bn), ceil(K/bk)] (DeepSeek-V3 layout);
        compressed-tensors float-quantized: weight_scale [N, 1] (channel) or [1] (tensor)
"""
from __future__ import annotations

import json
import os
import shutil
import zlib

import torch
from safetensors.torch import load_file, save_file

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Decoder linears under the names other families publish them (fused or renamed): Phi-3 and
# GLM qkv_proj / gate_up_proj, Baichuan W_pack, InternLM2 wqkv / wo / w1-w3, ChatGLM
# query_key_value / dense / dense_h_to_4h / dense_4h_to_h, Qwen (v1) c_attn / c_proj / w1 / w2,
# StarCoder2 c_fc / c_proj.  quantize() quantizes all of them, as AutoAWQ / GPTQ /
# llm-compressor quantize every decoder linear a checkpoint holds.
LINEARS = PROJ + ("qkv_proj", "gate_up_proj", "W_pack", "wqkv", "wo", "w1", "w2", "w3", "query_key_value",
                  "dense", "dense_h_to_4h", "dense_4h_to_h", "c_attn", "c_proj", "c_fc")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# Matrices reading one input (one Hessian, so act-order gives them one permutation), by
# (parent module, name); MoE experts' w1 / w3 sit under "experts.<i>" and keep their own.
SAME_INPUT = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up",
              "feed_forward.w1": "gate_up", "feed_forward.w3": "gate_up", "mlp.w1": "gate_up", "mlp.w2": "gate_up"}


def _input_key(base: str) -> str:
    """Which input the linear at ``base`` reads (matrices sharing one share act-order's permutation)."""
    parent, _, mod = base.rpartition(".")
    up, _, leaf = parent.rpartition(".")
    tag = SAME_INPUT.get(f"{leaf}.{mod}", SAME_INPUT.get(mod, mod))
    return parent + tag


def _word(values) -> int:
    """Pack a list of small ints, value i at bit offset i * (32 / len), into a signed int32."""
    bits = 32 // len(values)
    w = 0
    for i, v in enumerate(values):
        w |= int(v) << (bits * i)
    return w - (1 << 32) if w >= 1 << 31 else w


def pack_awq(q: torch.Tensor) -> torch.Tensor:
    """[R, N] ints -> int32 [R, N/8] in AutoAWQ's GEMM order."""
    R, N = q.shape
    out = torch.empty(R, N // 8, dtype=torch.int32)
    for r in range(R):
        for c in range(N // 8):
            out[r, c] = _word([q[r, 8 * c + AWQ_ORDER[i]] for i in range(8)])
    return out


def pack_gptq_rows(q: torch.Tensor, bits: int) -> torch.Tensor:
    per = 32 // bits
    K, N = q.shape
    out = torch.empty(K // per, N, dtype=torch.int32)
    for r in range(K // per):
        for n in range(N):
            out[r, n] = _word([q[per * r + i, n] for i in range(per)])
    return out


def pack_gptq_cols(z: torch.Tensor, bits: int) -> torch.Tensor:
    return pack_gptq_rows(z.t().contiguous(), bits).t().contiguous()


def _minmax_q(w: torch.Tensor, bits: int, sym: bool):
    """Per-row asymmetric (or symmetric) ints of w [rows, cols]: (q, scale [rows], zero [rows])."""
    top = (1 << bits) - 1
    if sym:
        s = (w.abs().amax(1) / ((top - 1) / 2)).clamp(min=1e-6)
        z = torch.full_like(s, (top + 1) // 2)
    else:
        lo, hi = w.amin(1).clamp(max=0), w.amax(1).clamp(min=0)
        s = ((hi - lo) / top).clamp(min=1e-6)
        z = torch.round(-lo / s).clamp(0, top)
    q = torch.round(w / s[:, None] + z[:, None]).clamp(0, top)
    return q.long(), s, z.long()


def awq(w: torch.Tensor, group: int):
    """w [N, K] -> (tensors, dense [N, K])."""
    wt = w.float().t().contiguous()                       # [K, N]; groups along K
    K, N = wt.shape
    G = -(-K // group)                                    # a last, shorter group when group does not divide K
    q = torch.empty(K, N, dtype=torch.long)
    s = torch.empty(G, N)
    z = torch.empty(G, N, dtype=torch.long)
    for g in range(G):
        qg, sg, zg = _minmax_q(wt[g * group:(g + 1) * group].t(), 4, False)     # per output column
        q[g * group:(g + 1) * group], s[g], z[g] = qg.t(), sg, zg
    s = s.half()
    dense = (q - z.repeat_interleave(group, 0)[:K]).float() * s.float().repeat_interleave(group, 0)[:K]
    return {"qweight": pack_awq(q), "qzeros": pack_awq(z), "scales": s}, dense.t()


def gptq(w: torch.Tensor, group: int, bits: int = 4, desc_act: bool = False, sym: bool = False, v2: bool = False,
         seed: int = 0):
    wt = w.float().t().contiguous()                       # [K, N]
    K, N = wt.shape
    gs = K if group <= 0 else group
    G = -(-K // gs)
    if desc_act:                                          # act-order: groups over a permutation of the rows
        perm = torch.randperm(K, generator=torch.Generator().manual_seed(seed))
        g_idx = torch.empty(K, dtype=torch.int32)
        g_idx[perm] = (torch.arange(K) // gs).to(torch.int32)
    else:
        g_idx = (torch.arange(K) // gs).to(torch.int32)
    q = torch.empty(K, N, dtype=torch.long)
    s = torch.zeros(G, N)
    z = torch.zeros(G, N, dtype=torch.long)
    for g in range(G):
        rows = (g_idx == g).nonzero().flatten()
        qg, sg, zg = _minmax_q(wt[rows].t(), bits, sym)
        q[rows], s[g], z[g] = qg.t(), sg, zg
    s = s.half()
    stored = z if v2 else (z - 1) & ((1 << bits) - 1)
    gi = g_idx.long()
    dense = (q - z[gi]).float() * s.float()[gi]
    return {"qweight": pack_gptq_rows(q, bits), "qzeros": pack_gptq_cols(stored, bits), "scales": s,
            "g_idx": g_idx}, dense.t()


def pack_quantized(w: torch.Tensor, group: int, bits: int = 4, sym: bool = True, actorder: str | None = None,
                   seed: int = 0):
    """w [N, K] -> (compressed-tensors pack-quantized tensors, dense [N, K])."""
    wf = w.float()
    N, K = wf.shape
    per, gs = 32 // bits, K if group <= 0 else group
    G = -(-K // gs)
    g_idx = (torch.arange(K) // gs).to(torch.int32)
    if actorder == "group":                               # groups over a permutation of the inputs
        perm = torch.randperm(K, generator=torch.Generator().manual_seed(seed))
        g_idx = torch.empty(K, dtype=torch.int32)
        g_idx[perm] = (torch.arange(K) // gs).to(torch.int32)
    u = torch.empty(N, K, dtype=torch.long)               # unsigned codes: signed + 2^(bits-1)
    s = torch.empty(N, G)
    z = torch.empty(N, G, dtype=torch.long)               # unsigned zeros (symmetric: 2^(bits-1))
    for g in range(G):
        cols = (g_idx == g).nonzero().flatten()
        qg, sg, zg = _minmax_q(wf[:, cols], bits, sym)
        u[:, cols], s[:, g], z[:, g] = qg, sg, zg
    s = s.to(torch.bfloat16)
    packed = torch.tensor([[_word([u[n, per * c + i] if per * c + i < K else 0 for i in range(per)])
                            for c in range(-(-K // per))] for n in range(N)], dtype=torch.int32)
    out = {"weight_packed": packed, "weight_scale": s, "weight_shape": torch.tensor([N, K], dtype=torch.int32)}
    if not sym:
        out["weight_zero_point"] = torch.tensor(
            [[_word([z[per * r + i, g] if per * r + i < N else 0 for i in range(per)]) for g in range(G)]
             for r in range(-(-N // per))], dtype=torch.int32)
    if actorder == "group":
        out["weight_g_idx"] = g_idx
    gi = g_idx.long()
    return out, (u - z[:, gi]).float() * s.float()[:, gi]


def w8a8(w: torch.Tensor, scale_dtype=torch.float32):
    s = (w.float().abs().amax(1, keepdim=True) / 127).clamp(min=1e-8).to(scale_dtype)
    q = torch.round(w.float() / s.float()).clamp(-128, 127).to(torch.int8)
    return {"weight": q, "weight_scale": s}, q.float() * s.float()


def w8a8_lmdeploy(w: torch.Tensor):
    """LMDeploy QLinear.from_float: per-channel absmax / 127, float32, stored as ``scale``."""
    q, d = w8a8(w, torch.float32)
    return {"weight": q["weight"], "scale": q["weight_scale"]}, d


def fp8_block(w: torch.Tensor, block=(128, 128)):
    N, K = w.shape
    bn, bk = block
    s = torch.empty(-(-N // bn), -(-K // bk))
    q = torch.empty(N, K, dtype=torch.float8_e4m3fn)
    dense = torch.empty(N, K)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            blk = w[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk].float()
            s[i, j] = blk.abs().max().clamp(min=1e-12) / 448
            qb = (blk / s[i, j]).to(torch.float8_e4m3fn)
            q[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk] = qb
            dense[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk] = qb.float() * s[i, j]
    return {"weight": q, "weight_scale_inv": s}, dense


def fp8_ct(w: torch.Tensor, strategy: str = "channel", input_scale: float | None = None):
    wf = w.float()
    s = wf.abs().amax(1, keepdim=True) / 448 if strategy == "channel" else wf.abs().max().reshape(1) / 448
    q = (wf / (s if strategy == "channel" else s[0])).to(torch.float8_e4m3fn)
    out = {"weight": q, "weight_scale": s.to(torch.bfloat16 if strategy == "tensor" else torch.float32)}
    if input_scale is not None:
        out["input_scale"] = torch.tensor([input_scale])
    return out, q.float() * out["weight_scale"].float().reshape(-1, 1)


def _ct_config(fmt, wtype, wstrat, astrat, dynamic, block=None):
    w = {"num_bits": 8, "type": wtype, "symmetric": True, "strategy": wstrat, "dynamic": False}
    if block:
        w["block_structure"] = list(block)
    a = {"num_bits": 8, "type": wtype, "symmetric": True, "strategy": astrat, "dynamic": dynamic}
    if astrat == "group":
        a["group_size"] = block[1]
    return {"quant_method": "compressed-tensors", "format": fmt, "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": w, "input_activations": a,
                                          "format": fmt}}}


def config_for(method: str, **o) -> dict:
    if method == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": o["group"], "version": "gemm", "zero_point": True,
                "modules_to_not_convert": o.get("dense_modules") or None}
    if method == "gptq":
        return {"quant_method": "gptq", "bits": o.get("bits", 4), "group_size": o["group"],
                "desc_act": o.get("desc_act", False), "sym": o.get("sym", False),
                "checkpoint_format": "gptq_v2" if o.get("v2") else "gptq"}
    if method == "pack":
        g = o.get("group", 128)
        w = {"num_bits": o.get("bits", 4), "type": "int", "symmetric": o.get("sym", True),
             "strategy": "group" if g > 0 else "channel", "group_size": g if g > 0 else None,
             "actorder": o.get("actorder"), "dynamic": False}
        return {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": w, "input_activations": None,
                                              "format": "pack-quantized"}}}
    if method == "w8a8":
        return _ct_config("int-quantized", "int", "channel", "token", True)
    if method == "w8a8-lmdeploy":
        return {"quant_method": "smooth_quant"}
    if method == "fp8":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": list(o.get("block", (128, 128)))}
    if method == "fp8-ct":
        static = o.get("input_scale") is not None
        return _ct_config("float-quantized", "float", o.get("strategy", "channel"), "tensor" if static else "token",
                          not static)
    raise ValueError(method)


def quantize(src: str, dst: str, method: str, dense_modules: tuple[str, ...] = (), **o) -> tuple[str, str]:
    """Write ``method``'s checkpoint of src's projections to dst, and the dequantized dense
    twin to dst + "-dense"; modules whose name contains one of ``dense_modules`` stay dense.
    Returns (quantized dir, dense dir)."""
    dense_dir = dst + "-dense"
    shutil.copytree(src, dst)
    shutil.copytree(src, dense_dir)
    for f in os.listdir(src):
        if not f.endswith(".safetensors"):
            continue
        sd, out, den = load_file(os.path.join(src, f)), {}, {}
        for name, t in sorted(sd.items()):
            base, _, leaf = name.rpartition(".")
            if leaf != "weight" or base.rpartition(".")[2] not in LINEARS or any(m in base for m in dense_modules):
                out[name] = den[name] = t
                continue
            if method == "awq":
                q, d = awq(t, o["group"])
            elif method == "gptq":
                q, d = gptq(t, o["group"], o.get("bits", 4), o.get("desc_act", False), o.get("sym", False),
                            o.get("v2", False), seed=zlib.crc32(_input_key(base).encode()))
            elif method == "pack":
                # llm-compressor's actorder shares one permutation among matrices of one input
                q, d = pack_quantized(t, o.get("group", 128), o.get("bits", 4), o.get("sym", True),
                                      o.get("actorder"), seed=zlib.crc32(_input_key(base).encode()))
            elif method == "w8a8":
                q, d = w8a8(t, o.get("scale_dtype", torch.float32))
            elif method == "w8a8-lmdeploy":
                q, d = w8a8_lmdeploy(t)
            elif method == "fp8":
                q, d = fp8_block(t, o.get("block", (128, 128)))
            else:
                q, d = fp8_ct(t, o.get("strategy", "channel"), o.get("input_scale"))
            out.update({f"{base}.{k}": v for k, v in q.items()})
            den[name] = d.to(t.dtype).contiguous()
        if method == "w8a8-lmdeploy":   # LMDeploy saves smooth_quant models with safe_serialization=False
            os.remove(os.path.join(dst, f))
            torch.save(out, os.path.join(dst, f.replace("model", "pytorch_model").replace(".safetensors", ".bin")))
        else:
            save_file(out, os.path.join(dst, f))
        save_file(den, os.path.join(dense_dir, f))
    with open(os.path.join(dst, "config.json")) as fh:
        cfg = json.load(fh)
    cfg["quantization_config"] = config_for(method, dense_modules=list(dense_modules), **o)
    with open(os.path.join(dst, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    return dst, dense_dir


def fake_quant_activations(model, method: str, block_k: int | None = None, input_scale: float | None = None):
    """Make a transformers model quantize every projection's input as the format's kernels
    do (the LM head stays exact): int8 per token (absmax / 127, round half to even), or fp8
    e4m3 per token in groups of block_k (max(absmax, 1e-10) / 448), or with a static scale.
    Written from the formats' definitions, not from halinfer's ops."""
    def int8(x):
        s = x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 127
        return torch.round(x / s).clamp(-128, 127) * s

    def fp8(x):
        if input_scale is not None:
            return (x / input_scale).clamp(-448, 448).to(torch.float8_e4m3fn).to(x.dtype) * input_scale
        K = x.shape[-1]
        g = block_k or K
        out = torch.empty_like(x)
        for a in range(0, K, g):
            part = x[..., a:a + g].float()
            s = part.abs().amax(-1, keepdim=True).clamp(min=1e-10) / 448
            out[..., a:a + g] = ((part / s).to(torch.float8_e4m3fn).float() * s).to(x.dtype)
        return out

    fq = int8 if method == "w8a8" else fp8
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rpartition(".")[2] in LINEARS:
            mod.register_forward_pre_hook(lambda m, args: (fq(args[0]),) + tuple(args[1:]))
    return model
