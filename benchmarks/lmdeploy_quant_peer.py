"""The peer harness's LMDeploy run (.peers/lmdeploy_peer.py, unchanged) on a quantized MODEL_DIR.
benchmarks/peer_quant.sh uses it, with the same environment as .peers/side_by_side.sh:
    MODEL_DIR=/tmp/peer-llama-awq PYTHONPATH=/tmp/peersite:.peers/payload/py python3 benchmarks/lmdeploy_quant_peer.py

LMDeploy needs no engine setting for these checkpoints. It takes the format from config.json's
quantization_config (lmdeploy/pytorch/config.py: QuantizationConfig.from_config: awq, smooth_quant).
PytorchEngineConfig.model_format only asks for online FP8 quantization of a bf16 model
(_patch_quantization_config). For awq it switches the model to float16 itself
(_update_torch_dtype), whatever dtype lmdeploy_peer.py asks for.

The wrapper adds two things. First, for an AWQ checkpoint it logs which W4A16 GEMM LMDeploy
will use (see w4a16_provider). Second, LMD_B1_ONLY=1. lmdeploy_peer.py always runs its offline
workload after the batch-1 decode (WORKLOADS only chooses long/prefix, and b1 gates both
b1 and offline). With LMD_B1_ONLY=1 the process exits as soon as the b1 RESULT is printed
and saved, the way lmdeploy_peer.py itself ends (os._exit).
Env: PEERS_DIR (default: .peers beside benchmarks/), plus everything lmdeploy_peer.py reads.
"""
import os
import sys

PEERS = os.environ.get("PEERS_DIR") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                    ".peers")
sys.path.insert(0, PEERS)

import lmdeploy_peer as P  # noqa: E402

if os.environ.get("LMD_B1_ONLY") == "1":
    def _stop_after_b1():   # run_all calls this first thing after it emits the b1 RESULT
        P.log("LMD_B1_ONLY=1: batch-1 decode done; offline workload skipped")
        sys.stdout.flush()
        os._exit(0)

    P.make_workload = _stop_after_b1



def w4a16_provider():
    """Which W4A16 GEMM LMDeploy's CUDA backend will build for this card
    (lmdeploy/pytorch/backends/cuda/awq_modules.py: _build_linear_w4a16). On SM90 it prefers
    TurboMind's native GEMM, whose binaries the peer payload leaves out (.peers/make_payload.sh),
    so there it falls back to its Triton awq_linear kernel."""
    import torch
    from lmdeploy.pytorch import envs
    from lmdeploy.pytorch.backends.cuda import awq_modules as A
    reason = A._turbomind_support_reason(4096, 4096, 4, 128, torch.float16)
    chosen = "turbomind" if reason is None and envs.w4a16_gemm_backend in ("auto", "turbomind") else "triton"
    return f"{chosen} (LMDEPLOY_W4A16_GEMM_BACKEND={envs.w4a16_gemm_backend}; TurboMind: {reason or 'usable'})"


if __name__ == "__main__":   # the engine may spawn workers that re-import this file
    try:
        import json
        with open(os.path.join(P.MODEL_DIR, "config.json")) as f:
            method = (json.load(f).get("quantization_config") or {}).get("quant_method")
        P.log("checkpoint quant_method:", method)
        if method == "awq":
            P.log("LMDeploy W4A16 linear provider:", w4a16_provider())
    except Exception as e:  # noqa: BLE001 - information only
        P.log("provider check failed:", repr(e)[:200])
    P.main()
