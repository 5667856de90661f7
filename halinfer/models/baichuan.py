"""Baichuan and Baichuan 2 (remote code modeling_baichuan.py): the Llama computation
with MHA and no biases, q|k|v packed into ``self_attn.W_pack`` (rows [q | k | v]).

* 7B models (Baichuan-7B "BaiChuanForCausalLM", Baichuan2-7B): rotary, base 10000.
* 13B models (Baichuan-13B, Baichuan2-13B): no rotary; ALiBi biases in attention
  (slopes as in the ALiBi paper, including its rule for head counts that are not a
  power of two: Baichuan2-13B has 40).  The 13B configs carry only model_max_length,
  the 7B ones also max_position_embeddings; vLLM tells them apart by hidden_size 4096.
  We take rotary when either says 7B.
* Baichuan 2 (both sizes): NormHead, the LM head divides each row by its L2 norm
  before use; we normalise the rows once, at load.  Baichuan 2 configs carry
  ``z_loss_weight`` and a 125696-token vocabulary; Baichuan 1 configs neither.
"""
from __future__ import annotations

import torch

from ..core.config import ModelConfig
from .fused import split_fused, split_names
from .llama import LlamaForCausalLM


def is_baichuan2(cfg: ModelConfig) -> bool:
    return "z_loss_weight" in cfg or cfg.vocab_size == 125696


class BaichuanForCausalLM(LlamaForCausalLM):
    def biases(self, cfg):
        return False, False

    def uses_alibi(self, cfg: ModelConfig) -> bool:
        return "max_position_embeddings" not in cfg and cfg.hidden_size != 4096

    def convert(self, weights):
        H, D = self.cfg.num_attention_heads, self.cfg.head_dim
        norm_head = is_baichuan2(self.cfg)
        for name, t in weights:
            if ".self_attn.W_pack." in name:
                pname, names = split_names(name, "W_pack", ["q_proj", "k_proj", "v_proj"])
                yield from zip(names, split_fused(pname, t, [H * D] * 3, self.ctx.quant))
            elif name == "lm_head.weight" and norm_head:
                yield name, torch.nn.functional.normalize(t.float(), dim=1)
            else:
                yield name, t
