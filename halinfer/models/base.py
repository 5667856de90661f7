"""What every model family shares: the step interface and checkpoint loading."""
from __future__ import annotations

import warnings
from typing import Iterable, Iterator

import torch
from torch import nn

from ..core.attention import AttentionMetadata, LayerKV
from ..core.config import ModelConfig
from .layers import Attention, KVSpec, Linear, ModelContext
from .moe import FusedExperts
from .parallel import ParallelLMHead, VocabParallelEmbedding


class CausalLM(nn.Module):
    """Base class.  A family sets ``stacked`` (checkpoint matrix -> merged layer and
    shard), may override ``convert`` (checkpoint layout -> ours) and builds
    ``self.model`` (returns hidden states) and ``self.lm_head``."""

    # checkpoint module name -> (our merged module name, shard index)
    stacked: dict[str, tuple[str, int]] = {
        "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }
    # checkpoint tensors to drop (rotary caches some exporters save)
    ignore_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")

    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx
        self.ops = ctx.ops
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", False))
        self.logit_soft_cap: float | None = None
        self.logit_scale: float = 1.0

    # -- step interface --------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 [n, vocab] for the given hidden rows."""
        logits = self.lm_head(hidden).float()
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
        if self.logit_soft_cap:
            logits = self.logit_soft_cap * torch.tanh(logits / self.logit_soft_cap)
        return logits

    def kv_cache_spec(self) -> list[KVSpec]:
        return list(self.ctx.kv_specs)

    def attention_layers(self) -> list[Attention]:
        return [m for m in self.modules() if isinstance(m, Attention)]

    def bind_kv_caches(self, caches: list[LayerKV]) -> None:
        layers = self.attention_layers()
        assert len(layers) == len(caches)
        for layer, kv in zip(layers, caches):
            layer.kv = caches[layer.layer_index]

    # -- loading ----------------------------------------------------------------
    def convert(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """Checkpoint names/layouts -> this class's (before merging).  Default: as is."""
        yield from weights

    def claim_weight(self, name: str, tensor: torch.Tensor, modules: dict[str, nn.Module]) -> str | None:
        """A family's hook for tensors the generic placement cannot handle (one expert's
        matrix going into a stacked [E, ...] parameter): copy it and return the parameter's
        name, or return None to leave the tensor to the generic rules.  Default: None."""
        return None

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy checkpoint tensors into the parameters.  Returns the names loaded."""
        modules = dict(self.named_modules())
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        unused: list[str] = []   # tensors no parameter takes: skipped with a warning, as transformers does
        with_nan: list[str] = []
        for name, tensor in self.convert(weights):
            if name.endswith(self.ignore_suffixes):
                continue
            if tensor.dtype.is_floating_point and bool(torch.isnan(tensor).any()):
                with_nan.append(name)
            claimed = self.claim_weight(name, tensor, modules)
            if claimed is not None:
                loaded.add(claimed)
                continue
            mod_path, _, pname = name.rpartition(".")
            parent, _, leaf = mod_path.rpartition(".")
            shard = 0
            if leaf in self.stacked:
                merged, shard = self.stacked[leaf]
                mod_path = f"{parent}.{merged}" if parent else merged
            target = modules.get(mod_path)
            if isinstance(target, (Linear, VocabParallelEmbedding, FusedExperts)):  # they slice out their shard
                # the parameters this tensor fills (a quantized format may name them otherwise)
                fills = target.fills(pname) if isinstance(target, Linear) else (pname,)
                if any(getattr(target, p, None) is None for p in fills):
                    unused.append(name)
                    continue
                target.load(pname, tensor, shard, source=name)
                loaded.update(f"{mod_path}.{p}" for p in fills)
                continue
            full = f"{mod_path}.{pname}"
            if full not in params:
                unused.append(name)
                continue
            p = params[full]
            if p.shape != tensor.shape:
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, "
                                 f"the model expects {tuple(p.shape)}")
            p.data.copy_(tensor)
            loaded.add(full)
        if unused:
            warnings.warn(f"{len(unused)} checkpoint tensor(s) match no parameter of {type(self).__name__} and "
                          f"were skipped: {', '.join(unused[:8])}{' ...' if len(unused) > 8 else ''}", stacklevel=2)
        if with_nan:
            warnings.warn(f"{len(with_nan)} checkpoint tensor(s) hold NaN values: {', '.join(with_nan[:8])}"
                          f"{' ...' if len(with_nan) > 8 else ''}; the model's output will be NaN", stacklevel=2)
        if self.tie_word_embeddings:
            self.tie_embeddings()
        return loaded

    def tie_embeddings(self) -> None:
        self.lm_head.weight = self.model.embed_tokens.weight

    def expected_params(self) -> set[str]:
        names = {n for n, _ in self.named_parameters()}
        if self.tie_word_embeddings:
            names.discard("lm_head.weight")
        return names


def make_lm_head(ctx: ModelContext, hidden: int, vocab: int, bias: bool = False) -> Linear:
    # The LM head stays unquantized, as the quantized formats we read leave it.
    return ParallelLMHead(ctx, hidden, vocab, bias=bias)


def make_embedding(ctx: ModelContext, vocab: int, hidden: int) -> VocabParallelEmbedding:
    return VocabParallelEmbedding(ctx, vocab, hidden)
