"""Tiny random Hugging Face checkpoints and a tiny tokenizer, built locally.

No model hub is reachable from CI, so the tests build their own: a byte-level BPE tokenizer trained on a few
paragraphs with the ``tokenizers`` library, and a transformers model of the
requested family with small random weights, saved as safetensors.
"""
from __future__ import annotations

import os

import torch

CORPUS = """\
halinfer runs large language models on whatever accelerator a user has. One core defines
the operators a transformer needs; each vendor backend is a plugin. The quick brown fox
jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly quick daft
zebras jump! Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly.
Attention is computed over a paged key-value cache; blocks are shared between prompts that
begin the same way. Continuous batching keeps the device busy: new requests join as soon as
others finish. 0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' " @ # $ % ^ & _ ~
Hello, world! Hello there. How are you today? I am fine, thank you. What is the capital of
France? Paris is the capital of France. Tell me a story about a robot who learns to paint.
"""

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def build_tokenizer(path: str, vocab_size: int = 400):
    """Train a byte-level BPE on CORPUS and save it (tokenizer.json + config) to path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    os.makedirs(path, exist_ok=True)
    fast.save_pretrained(path)
    return fast


# Small shapes that still exercise GQA (4 query heads per KV head), several layers
# and a head_dim that is not a power of two.
BASE = dict(hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, max_position_embeddings=512, initializer_range=0.3,
            rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=2)

FAMILIES = {
    "llama": ("LlamaConfig", {"rope_theta": 10000.0}),
    "llama3": ("LlamaConfig", {"rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}}),
    "llama-linear": ("LlamaConfig", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "llama-dynamic": ("LlamaConfig", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}),
    "llama-tied": ("LlamaConfig", {"tie_word_embeddings": True}),
    "llama-bias": ("LlamaConfig", {"attention_bias": True, "mlp_bias": True}),
    "mistral": ("MistralConfig", {"sliding_window": 7, "head_dim": 24}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen2-swa": ("Qwen2Config", {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1}),
    "qwen3": ("Qwen3Config", {"head_dim": 32}),
    # mixture of experts: 8 experts, top-2, narrow experts
    "mixtral": ("MixtralConfig", {"num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 64}),
    "qwen2-moe": ("Qwen2MoeConfig", {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 48,
                                     "shared_expert_intermediate_size": 96, "mlp_only_layers": [1]}),
    "qwen3-moe": ("Qwen3MoeConfig", {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 48,
                                     "norm_topk_prob": True, "head_dim": 32}),
    # Qwen2-MoE as DeepSeek-MoE's reference: no q/k/v bias, layer 0 dense, a shared expert twice
    # the routed width (n_shared_experts=2) whose sigmoid gate ADJUSTMENTS zeroes (convert.py says why)
    "qwen2-moe-as-deepseek": ("Qwen2MoeConfig", {
        "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
        "mlp_only_layers": [0], "qkv_bias": False}),
    # multi-head latent attention: MHA-shaped (MLA has no KV groups), latent 32 + rope 8 per token;
    # top-3 from the best 2 of 4 groups (with top-2, the 2 best groups always hold the 2 best experts)
    "deepseek-v2": ("DeepseekV2Config", {
        "num_key_value_heads": 4, "kv_lora_rank": 32, "q_lora_rank": 48, "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8, "v_head_dim": 24, "n_routed_experts": 8, "num_experts_per_tok": 3,
        "n_shared_experts": 2, "moe_intermediate_size": 32, "first_k_dense_replace": 1,
        "topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.0,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                            "original_max_position_embeddings": 128, "beta_fast": 32, "beta_slow": 1,
                            "mscale": 0.707, "mscale_all_dim": 0.707}}),
    "deepseek-v2-lite": ("DeepseekV2Config", {
        "num_key_value_heads": 4, "kv_lora_rank": 32, "q_lora_rank": None, "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 8, "num_experts_per_tok": 2,
        "n_shared_experts": 2, "moe_intermediate_size": 32, "first_k_dense_replace": 1}),
    # original context 64 > the longest test sequence (29 + 32): the short factors throughout
    "minicpm3": ("MiniCPM3Config", {
        "num_key_value_heads": 4, "kv_lora_rank": 32, "q_lora_rank": 48, "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8, "scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 32,
        "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.2, 1.5, 2.0],
                            "long_factor": [1.5, 2.5, 4.0, 6.0], "original_max_position_embeddings": 64,
                            # = max_position / original; transformers 5.17's MiniCPM3 requires the key
                            "factor": 8.0}}),
    # eps 0.1 (real: 0.01) so the sparsemixer masks keep several experts in each softmax
    "phimoe": ("PhimoeConfig", {
        "num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 64, "attention_bias": True,
        "lm_head_bias": True, "router_jitter_noise": 0.1,
        "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_mscale": 1.1, "long_mscale": 1.3,
                            "short_factor": [1.0 + 0.1 * i for i in range(12)],
                            "long_factor": [1.5 + 0.5 * i for i in range(12)], "original_max_position_embeddings": 64}}),
    "glm4-moe": ("Glm4MoeConfig", {
        "head_dim": 32, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1,
        "n_shared_experts": 1, "moe_intermediate_size": 32, "first_k_dense_replace": 1, "norm_topk_prob": True,
        "routed_scaling_factor": 2.5, "attention_bias": True, "use_qk_norm": True}),
    # window 8 < the prompts; YaRN as gpt-oss ships it (truncate off)
    "gpt-oss": ("GptOssConfig", {
        "head_dim": 24, "num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 64,
        "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0,
                            "original_max_position_embeddings": 128, "beta_fast": 32.0, "beta_slow": 1.0,
                            "truncate": False}}),
    # chunks of 8 and a temperature floor of 4, so both act within the test sequences; top-2
    # (Scout/Maverick route top-1) to exercise several input-scaled experts per token
    "llama4": ("Llama4TextConfig", {
        "head_dim": 24, "num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 48,
        "intermediate_size_mlp": 160, "moe_layers": [0, 2], "no_rope_layers": [1, 1, 0],
        "attention_chunk_size": 8, "floor_scale": 4, "attn_scale": 0.1,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
}


# Dense families of issue 5, and the transformers references of remote-code ones.
# Windows are shorter than the longest test prompt (29 tokens); soft-caps sit near the
# size of the raw scores / logits, so they change them without flattening them.
_LONGROPE = {"rope_type": "longrope", "short_factor": [1.0 + 0.15 * i for i in range(12)],
             "long_factor": [1.5 + 0.6 * i for i in range(12)]}
DENSE_FAMILIES = {
    "gemma": ("GemmaConfig", {"head_dim": 32, "num_key_value_heads": 1, "num_hidden_layers": 2}),
    "gemma2": ("Gemma2Config", {"head_dim": 32, "num_hidden_layers": 2, "sliding_window": 7,
                                "query_pre_attn_scalar": 20, "attn_logit_softcapping": 6.0,
                                "final_logit_softcapping": 10.0}),
    "gemma3": ("Gemma3TextConfig", {
        "head_dim": 32, "sliding_window": 6, "query_pre_attn_scalar": 20,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                            "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6}}}),
    # LongRoPE with original context 64 > the longest test sequence (29 + 32): transformers'
    # Phi-3 re-encodes a whole sequence once it outgrows that context, which a KV cache cannot
    # follow, so the long factors are checked against transformers' table instead
    # (tests/models/test_longrope_table.py); factor 512 / 64 still sets the attention scaling.
    "phi3": ("Phi3Config", {"sliding_window": 9, "num_hidden_layers": 2, "max_position_embeddings": 512,
                            "original_max_position_embeddings": 64, "rope_scaling": _LONGROPE}),
    "phi4-mini": ("Phi3Config", {"partial_rotary_factor": 0.75, "tie_word_embeddings": True, "num_hidden_layers": 2,
                                 "original_max_position_embeddings": 64, "rope_scaling": {
                                     **_LONGROPE, "short_factor": _LONGROPE["short_factor"][:9],
                                     "long_factor": _LONGROPE["long_factor"][:9]}}),
    "starcoder2": ("Starcoder2Config", {"sliding_window": 7, "norm_epsilon": 1e-5, "use_bias": True,
                                        "num_hidden_layers": 2}),
    "glm": ("GlmConfig", {"head_dim": 32, "num_hidden_layers": 2}),
    "glm4": ("Glm4Config", {"head_dim": 32, "num_hidden_layers": 2}),
    # references for remote-code layouts (converted by testing/convert.py)
    "qwen2-mha": ("Qwen2Config", {"num_key_value_heads": 4, "num_hidden_layers": 2}),
    "llama-mha-bias": ("LlamaConfig", {"num_key_value_heads": 4, "attention_bias": True, "num_hidden_layers": 2,
                                       "rope_theta": 20000.0}),
    "llama-mha": ("LlamaConfig", {"num_key_value_heads": 4, "num_hidden_layers": 2}),
    "llama-mha-unit-head": ("LlamaConfig", {"num_key_value_heads": 4, "num_hidden_layers": 2}),
    # 6 heads: ALiBi slopes for a head count that is not a power of two (Baichuan2-13B has 40)
    "llama-alibi": ("LlamaConfig", {"num_attention_heads": 6, "num_key_value_heads": 6, "num_hidden_layers": 2}),
}
FAMILIES.update(DENSE_FAMILIES)


def _perturb_norms(model) -> None:
    """HF initialises norm weights to 1 (Gemma's to 0) and norm biases to 0, which would
    leave their loading untested: move every norm parameter off its initial value."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_((torch.randn(p.shape, generator=g) * 0.3).to(p.dtype))


def _unit_lm_head(model) -> None:
    """Unit-length lm_head rows (what Baichuan 2's NormHead computes from any rows), and a
    final-norm gain of 4 so that the logits still spread wide enough for clear argmaxes."""
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.nn.functional.normalize(model.lm_head.weight.float(), dim=1))
        model.model.norm.weight.mul_(4.0)


# Adjustments to the random model before it is saved, per recipe.
ADJUSTMENTS = {
    "gemma": (_perturb_norms,), "gemma2": (_perturb_norms,), "gemma3": (_perturb_norms,),
    "phi3": (_perturb_norms,), "phi4-mini": (_perturb_norms,), "starcoder2": (_perturb_norms,),
    "glm": (_perturb_norms,), "glm4": (_perturb_norms,), "qwen2-mha": (_perturb_norms,),
    "llama-mha-bias": (_perturb_norms,), "llama-mha": (_perturb_norms,), "llama-mha-unit-head": (_perturb_norms, _unit_lm_head),
    "llama-alibi": (_perturb_norms, _unit_lm_head),
}


def _zero_shared_expert_gate(model) -> None:
    """sigmoid(x @ 0) = 1/2 exactly: the shared expert becomes an ungated one at half scale."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("shared_expert_gate.weight"):
                p.zero_()


def _random_correction_bias(model) -> None:
    """The router's e_score_correction_bias starts at 0; make it move the expert choice."""
    g = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)


ADJUSTMENTS.update({
    "mixtral": (_perturb_norms,), "qwen2-moe": (_perturb_norms,), "qwen3-moe": (_perturb_norms,),
    "qwen2-moe-as-deepseek": (_perturb_norms, _zero_shared_expert_gate),
    "deepseek-v2": (_perturb_norms,), "deepseek-v2-lite": (_perturb_norms,), "minicpm3": (_perturb_norms,),
    "phimoe": (_perturb_norms,), "glm4-moe": (_perturb_norms, _random_correction_bias),
    "gpt-oss": (_perturb_norms,), "llama4": (_perturb_norms,),
})
# Recipes whose saved directory is the reference of a family transformers lacks:
# hf_compare.hf_model reads this file and adapts the transformers model (see there).
REFERENCE_MARKERS = {"llama-alibi": {"attention": "alibi"}}


def make_config(family: str, **overrides):
    import transformers

    cls_name, extra = FAMILIES[family]
    kw = {**BASE, **extra, **overrides}
    return getattr(transformers, cls_name)(**kw)


def save_tiny_model(family: str, path: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                    tokenizer: bool = True, **overrides) -> str:
    """Build a random ``family`` model with transformers and save it to path."""
    from transformers import AutoModelForCausalLM

    cfg = make_config(family, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    for adjust in ADJUSTMENTS.get(family, ()):
        adjust(model)
    model.save_pretrained(path, safe_serialization=True)
    if family in REFERENCE_MARKERS:
        import json

        from .hf_compare import REFERENCE_MARKER

        with open(os.path.join(path, REFERENCE_MARKER), "w") as f:
            json.dump(REFERENCE_MARKERS[family], f)
    if tokenizer:
        build_tokenizer(path)
    return path
