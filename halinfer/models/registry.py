"""HF ``architectures`` name -> the class that implements it.

Entries are "module:Class" strings so that importing the registry stays cheap.
"""
from __future__ import annotations

import importlib

ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama:LlamaForCausalLM",
    "MistralForCausalLM": "llama:LlamaForCausalLM",
    "Qwen2ForCausalLM": "llama:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "llama:Qwen3ForCausalLM",
    "InternLM3ForCausalLM": "llama:InternLM3ForCausalLM",
    "InternLM2ForCausalLM": "internlm2:InternLM2ForCausalLM",
    # dense families of issue 5
    "InternLMForCausalLM": "internlm:InternLMForCausalLM",
    "GemmaForCausalLM": "gemma:GemmaForCausalLM",
    "Gemma2ForCausalLM": "gemma:Gemma2ForCausalLM",
    "Gemma3ForCausalLM": "gemma:Gemma3ForCausalLM",
    "Gemma3ForConditionalGeneration": "gemma3_vl:Gemma3ForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "qwen3_vl:Qwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_vl:Qwen3VLMoeForConditionalGeneration",
    "Phi3ForCausalLM": "phi3:Phi3ForCausalLM",
    "Starcoder2ForCausalLM": "starcoder2:Starcoder2ForCausalLM",
    "GlmForCausalLM": "glm:GlmForCausalLM",
    "Glm4ForCausalLM": "glm:Glm4ForCausalLM",
    "ChatGLMModel": "glm:ChatGLMForCausalLM",                     # ChatGLM2/3, GLM-4, CodeGeeX4 (remote code)
    "ChatGLMForConditionalGeneration": "glm:ChatGLMForCausalLM",
    "BaichuanForCausalLM": "baichuan:BaichuanForCausalLM",        # Baichuan2 7B/13B, Baichuan 13B
    "BaiChuanForCausalLM": "baichuan:BaichuanForCausalLM",        # Baichuan 7B
    "QWenLMHeadModel": "qwen:QWenLMHeadModel",                    # Qwen (v1)
    # mixture of experts / latent attention
    "MixtralForCausalLM": "mixtral:MixtralForCausalLM",
    "Qwen2MoeForCausalLM": "qwen_moe:Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM": "qwen_moe:Qwen3MoeForCausalLM",
    "DeepseekForCausalLM": "deepseek:DeepseekForCausalLM",
    "DeepseekV2ForCausalLM": "deepseek:DeepseekV2ForCausalLM",
    "MiniCPM3ForCausalLM": "minicpm3:MiniCPM3ForCausalLM",
    "PhimoeForCausalLM": "phimoe:PhimoeForCausalLM",
    "Glm4MoeForCausalLM": "glm4_moe:Glm4MoeForCausalLM",
    "GptOssForCausalLM": "gpt_oss:GptOssForCausalLM",
    "Llama4ForCausalLM": "llama4:Llama4ForCausalLM",
    # vision-language (issue 15)
    "LlavaForConditionalGeneration": "llava:LlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration": "llava:LlavaNextForConditionalGeneration",
    "InternVLForConditionalGeneration": "internvl:InternVLForConditionalGeneration",
    "InternVLChatModel": "internvl:InternVLChatModel",
    "Qwen2VLForConditionalGeneration": "qwen2_vl:Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_vl:Qwen2_5_VLForConditionalGeneration",
}


def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def model_class(arch: str):
    target = ARCHITECTURES.get(arch)
    if target is None:
        raise ValueError(
            f"architecture {arch!r} is not supported; supported architectures: {', '.join(supported_architectures())}"
        )
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(f"halinfer.models.{mod}"), cls)
