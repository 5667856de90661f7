"""The rows of the support matrix we are asked to reach (LMDeploy's list, in
shared/seed/supported_models.zh.md), and the test cases that back each row.

A row with no cases is not implemented yet; ``halinfer support`` shows it as
unsupported on every backend.  Multimodal rows (Type MLLM) back their vision
models with "vlm:" cases (halinfer.testing.vlm_cases); an MLLM row whose cases are all
text cases is implemented for its text model only.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedRow:
    model: str
    size: str
    type: str                 # "LLM" or "MLLM"
    # ids in halinfer.testing.cases.CASES or vlm_cases.VLM_CASES ("vlm:..."); () = not implemented.
    # An MLLM row with only text cases is implemented for its text model only.
    cases: tuple[str, ...]
    note: str = ""


_IVL = "-hf layout (InternVLForConditionalGeneration) and the remote-code InternVLChatModel layout"

SEED_ROWS: list[SeedRow] = [
    SeedRow("Llama", "7B - 65B", "LLM", ("llama",)),
    SeedRow("Llama2", "7B - 70B", "LLM", ("llama",)),
    SeedRow("Llama3", "8B, 70B", "LLM", ("llama",)),
    SeedRow("Llama3.1", "8B, 70B", "LLM", ("llama3-rope",)),
    SeedRow("Llama3.2", "1B, 3B", "LLM", ("llama3-rope", "llama3.2-tied")),
    SeedRow("Llama3.2-VL", "11B, 90B", "MLLM", ()),
    SeedRow("Llama4", "Scout, Maverick", "MLLM", ("llama4-text",),
            "text model only (Llama4ForCausalLM); the multimodal checkpoints are not read"),
    SeedRow("InternLM", "7B - 20B", "LLM", ("internlm",)),
    SeedRow("InternLM2", "7B - 20B", "LLM", ("internlm2",)),
    SeedRow("InternLM2.5", "7B", "LLM", ("internlm2",)),
    SeedRow("InternLM3", "8B", "LLM", ("internlm3",)),
    SeedRow("Intern-S1", "241B", "MLLM", ()),
    SeedRow("Intern-S1-mini", "8.3B", "MLLM", ()),
    SeedRow("Baichuan", "7B", "LLM", ("baichuan-7b",)),
    SeedRow("Baichuan2", "7B", "LLM", ("baichuan2-7b",)),
    SeedRow("Baichuan2", "13B", "LLM", ("baichuan2-13b-alibi",)),
    SeedRow("ChatGLM2", "6B", "LLM", ("chatglm2",), "ChatGLM3 shares the layout and code path"),
    SeedRow("YI", "6B - 34B", "LLM", ("llama",), "Yi uses the Llama architecture"),
    SeedRow("Code Llama", "7B - 34B", "LLM", ("llama", "codellama-rope-theta"), "Llama architecture (rope theta 1e6)"),
    SeedRow("Mistral", "7B", "LLM", ("mistral-sliding-window",)),
    SeedRow("Mixtral", "8x7B, 8x22B", "LLM", ("mixtral",)),
    SeedRow("QWen", "1.8B - 72B", "LLM", ("qwen-v1",), "within seq_length (no dynamic NTK / logn past it)"),
    SeedRow("QWen1.5", "0.5B - 110B", "LLM", ("qwen2-tied", "qwen2-sliding-window")),
    SeedRow("QWen1.5-MoE", "A2.7B", "LLM", ("qwen2-moe",)),
    SeedRow("QWen2", "0.5B - 72B", "LLM", ("qwen2-tied", "qwen2-sliding-window")),
    SeedRow("QWen2-MoE", "57BA14B", "LLM", ("qwen2-moe",)),
    SeedRow("Qwen2.5", "0.5B - 72B", "LLM", ("qwen2-tied",)),
    SeedRow("Qwen3", "0.6B - 235B", "LLM", ("qwen3-qk-norm", "qwen3-moe"), "30B-A3B and 235B-A22B are Qwen3-MoE"),
    SeedRow("QWen3-Next", "80B", "LLM", (), "linear attention: a later issue"),
    SeedRow("QWen2-VL", "2B, 7B", "MLLM", ("vlm:qwen2-vl",), "images (no video)"),
    SeedRow("QWen2.5-VL", "3B - 72B", "MLLM", ("vlm:qwen2.5-vl",), "images (no video)"),
    SeedRow("QWen3-VL", "2B - 235B", "MLLM", ("vlm:qwen3-vl", "vlm:qwen3-vl-moe"),
            "dense (Qwen3VLForConditionalGeneration) and MoE sizes 30B-A3B, 235B-A22B "
            "(Qwen3VLMoeForConditionalGeneration; unquantized experts only); images (no video)"),
    SeedRow("DeepSeek-MoE", "16B", "LLM", ("deepseek-moe",), "hub-code family, tested through a converted Qwen2-MoE"),
    SeedRow("DeepSeek-V2", "16B, 236B", "LLM", ("deepseek-v2", "deepseek-v2-lite")),
    SeedRow("DeepSeek-V2.5", "236B", "LLM", ("deepseek-v2",)),
    SeedRow("DeepSeek-VL", "7B", "MLLM", ()),
    SeedRow("DeepSeek-VL2", "3B - 27B", "MLLM", ()),
    SeedRow("MiniCPM3", "4B", "LLM", ("minicpm3",)),
    SeedRow("MiniCPM-Llama3-V-2_5", "-", "MLLM", ()),
    SeedRow("MiniCPM-V-2_6", "8B", "MLLM", ()),
    SeedRow("Gemma", "2B-7B", "LLM", ("gemma",)),
    SeedRow("Gemma2", "9B-27B", "LLM", ("gemma2-softcap-sliding",)),
    SeedRow("Gemma3", "1B-27B", "MLLM", ("gemma3-text", "vlm:gemma3"),
            "Gemma3ForCausalLM (1B) and Gemma3ForConditionalGeneration (images; no pan-and-scan crops)"),
    SeedRow("StarCoder2", "3B-15B", "LLM", ("starcoder2",)),
    SeedRow("Phi-3-mini", "3.8B", "LLM", ("phi3-longrope-sliding",),
            "LongRoPE matches transformers within the original context (4096) only"),
    SeedRow("Phi-3.5-mini", "3.8B", "LLM", ("phi3-longrope-sliding",),
            "LongRoPE matches transformers within the original context (4096) only"),
    SeedRow("Phi-3.5-MoE", "16x3.8B", "LLM", ("phi3.5-moe",)),
    SeedRow("Phi-4-mini", "3.8B", "LLM", ("phi4-mini-partial-rotary",),
            "LongRoPE matches transformers within the original context (4096) only"),
    SeedRow("Phi-3-vision", "4.2B", "MLLM", ()),
    SeedRow("Phi-3.5-vision", "4.2B", "MLLM", ()),
    SeedRow("CogVLM-Chat", "17B", "MLLM", ()),
    SeedRow("CogVLM2-Chat", "19B", "MLLM", ()),
    SeedRow("LLaVA(1.5,1.6)", "7B-34B", "MLLM", ("vlm:llava", "vlm:llava-next"), "llava-hf layout"),
    SeedRow("InternVL(v1.5)", "2B-26B", "MLLM", ("vlm:internvl-chat-internlm2",),
            "remote-code layout (InternVLChatModel, InternLM2 text); ps_version v1's pixel shuffle is untested"),
    SeedRow("InternVL2", "1B-76B", "MLLM", ("vlm:internvl", "vlm:internvl-chat"), _IVL),
    SeedRow("InternVL2.5(MPO)", "1B-78B", "MLLM", ("vlm:internvl", "vlm:internvl-chat"), _IVL),
    SeedRow("InternVL3", "1B-78B", "MLLM", ("vlm:internvl", "vlm:internvl-chat"), _IVL),
    SeedRow("InternVL3.5", "1B-241BA28B", "MLLM", ("vlm:internvl", "vlm:internvl-chat"), "dense sizes; " + _IVL),
    SeedRow("Mono-InternVL", "2B", "MLLM", ()),
    SeedRow("ChemVLM", "8B-26B", "MLLM", ()),
    SeedRow("InternLM-XComposer2", "7B, 4khd-7B", "MLLM", ()),
    SeedRow("InternLM-XComposer2.5", "7B", "MLLM", ()),
    SeedRow("Qwen-VL", "7B", "MLLM", ()),
    SeedRow("GLM4", "9B", "LLM", ("glm4-chatglm", "glm4-hf"), "remote-code (ChatGLMModel) and -hf layouts"),
    SeedRow("GLM-4-0414", "9B", "LLM", ("glm4-0414",)),
    SeedRow("GLM-4V", "9B", "MLLM", ()),
    SeedRow("GLM-4.1V-Thinking", "9B", "MLLM", ()),
    SeedRow("GLM-4.5", "355B", "LLM", ("glm4.5-moe",)),
    SeedRow("GLM-4.5-Air", "106B", "LLM", ("glm4.5-moe",)),
    SeedRow("CodeGeeX4", "9B", "LLM", ("glm4-chatglm",), "GLM-4 architecture, ChatGLM layout"),
    SeedRow("Molmo", "7B-D, 72B", "MLLM", ()),
    SeedRow("gpt-oss", "20B, 120B", "LLM", ("gpt-oss",), "bf16 weights; the MXFP4-packed release is not read yet"),
    SeedRow("SDAR", "1.7B-30B", "LLM", (), "diffusion decoding: a later issue"),
]


def row(model: str, size: str | None = None) -> SeedRow:
    for r in SEED_ROWS:
        if r.model == model and (size is None or r.size == size):
            return r
    raise KeyError(f"no seed row {model!r}" + (f" ({size})" if size else ""))
