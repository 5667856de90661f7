"""The ``quantize`` subcommand's arguments and entry point."""
from __future__ import annotations


def add_arguments(s) -> None:
    s.add_argument("model", help="a Hugging Face checkpoint directory (Llama, Mistral, Qwen2, Qwen3 families) "
                                 "or a .gguf file")
    s.add_argument("--method", required=True, help="awq, gptq, w8a8 or fp8")
    s.add_argument("--out", required=True, help="directory to write the quantized checkpoint into (new or empty)")
    s.add_argument("--calib-file", default=None, help="UTF-8 text to calibrate on (default: the built-in text)")
    s.add_argument("--device", default="cpu", help="where layers are calibrated: cpu, cuda or auto")
    s.add_argument("--group-size", type=int, default=128, help="inputs per scale group (awq, gptq)")
    s.add_argument("--bits", type=int, default=4, help="gptq weight bits: 4 or 8")
    s.add_argument("--asym", action="store_true", help="gptq: asymmetric groups (a zero point per group) "
                                                       "instead of symmetric ones")
    s.add_argument("--act-order", action="store_true", help="gptq: process input columns by descending "
                                                            "Hessian diagonal (desc_act; g_idx records the groups)")
    s.add_argument("--num-samples", type=int, default=16, help="calibration windows")
    s.add_argument("--seq-len", type=int, default=256, help="tokens per calibration window")


def cmd_quantize(a) -> int:
    from . import quantize_checkpoint

    out = quantize_checkpoint(a.model, a.method, a.out, calib_file=a.calib_file, device=a.device,
                              group_size=a.group_size, bits=a.bits, num_samples=a.num_samples, seq_len=a.seq_len,
                              sym=not a.asym, act_order=a.act_order)
    print(f"wrote {a.method} checkpoint to {out}")
    return 0
