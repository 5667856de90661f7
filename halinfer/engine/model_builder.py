"""The model factory workers call (ModelSpec.factory): registry lookup, build, load.

It lives outside the core, which knows models only through core/model_protocol.py.
"""
from __future__ import annotations

import torch

from ..core.distributed import SINGLE, TPGroup
from ..core.loader import finish_loading, init_dummy_weights, open_checkpoint
from ..core.model_protocol import ModelSpec


def build_model(spec: ModelSpec, ops, device: torch.device, tp: TPGroup = SINGLE):
    """This rank's shard of the model (all of it with one rank), weights loaded."""
    from ..models.layers import ModelContext
    from ..models.norm_quant_plan import plan_mlp_quant_fusion, plan_norm_defer, plan_norm_quant_fusion
    from ..models.registry import model_class

    ckpt = open_checkpoint(spec.checkpoint)
    cls = model_class(spec.architecture)
    ctx = ModelContext(ops=ops, dtype=spec.dtype, device=device, quant=spec.quant, max_model_len=spec.max_model_len,
                       tp=tp, expert_parallel=spec.expert_parallel)
    with torch.device(device):
        model = cls(ckpt.config, ctx)
    if spec.load_format == "dummy":
        init_dummy_weights(model, spec.seed)
    else:
        loaded = model.load_weights(ckpt.weights())
        missing = sorted(model.expected_params() - loaded)
        if missing:
            raise ValueError(f"checkpoint {spec.checkpoint!r} lacks {len(missing)} tensor(s) the model needs, e.g. "
                             f"{', '.join(missing[:5])}")
    finish_loading(model)   # after the missing-tensor check: a re-layout may rename or drop tensors
    plan_norm_quant_fusion(model, ops)   # after loading: modules a checkpoint left dense are dense only now
    plan_mlp_quant_fusion(model, ops)    # (the same holds for a down_proj)
    plan_norm_defer(model, ops)          # norms left to the AWQ GEMV they feed (batch 1)
    return model.eval()


def check_architecture(arch: str) -> None:
    """Fail at once (before any worker starts) on an architecture no model implements."""
    from ..models.registry import model_class

    model_class(arch)


def check_parallel(mc, tensor_parallel_size: int, expert_parallel: bool) -> None:
    """Fail before any worker starts when the model cannot be split tensor_parallel_size ways."""
    if tensor_parallel_size == 1:
        return
    from ..models.moe import num_experts
    from ..models.parallel import split_heads

    for rank in range(tensor_parallel_size):
        split_heads(TPGroup(rank, tensor_parallel_size), int(mc.num_attention_heads), int(mc.num_kv_heads))
    if expert_parallel:
        n = num_experts(mc)   # raises for a dense model: expert parallelism needs experts
        if n % tensor_parallel_size:
            raise ValueError(f"enable_expert_parallel: {n} experts do not split evenly over "
                             f"tensor_parallel_size={tensor_parallel_size}")
