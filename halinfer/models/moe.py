"""The mixture-of-experts feed-forward block every MoE family shares.

``SparseMoE`` = router (``gate``) -> ``Ops.moe_route`` -> ``FusedExperts``
(``Ops.fused_moe`` over stacked weights), plus optional shared expert(s), optionally
behind a sigmoid gate (Qwen2-MoE).  Expert weights are stacked for the fused op:
``w13`` [E, 2I, H] (gate rows, then up rows) and ``w2`` [E, H, I].

Module names follow the commonest checkpoint layout (Qwen2-MoE, DeepSeek, GLM):
``gate`` (with ``e_score_correction_bias``), ``experts.<e>.<matrix>``,
``shared_experts`` or ``shared_expert``, ``shared_expert_gate``.  Families whose
checkpoints use other names rename in ``convert``; per-expert matrices are placed by
``ExpertLoading.claim_weight``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..core.distributed import split_evenly
from ..core.ops.fp8 import fp8_dequantize_weight
from ..core.ops.gptq import gptq_dequantize, gptq_pack_cols, gptq_v1_to_v2_zeros
from ..core.ops.quant import awq_dequantize
from .layers import GatedMLP, Linear, ModelContext
from .quant_linear import pack_as_gptq

# checkpoint matrix name -> (our parameter, shard): shard 0 = gate rows of w13, 1 = up rows, None = all of w2
GATE_UP_DOWN = {"gate_proj": ("w13", 0), "up_proj": ("w13", 1), "down_proj": ("w2", None)}
W1_W3_W2 = {"w1": ("w13", 0), "w3": ("w13", 1), "w2": ("w2", None)}   # Mixtral / Phi-3.5-MoE
FP8_SCALES = ("weight_scale_inv", "weight_scale")   # an FP8 expert matrix's scale (block / compressed-tensors)
# The checkpoint tensors one quantized expert matrix is made of, per format (FP8's scale under
# either name is held as weight_scale)
EXPERT_PARTS = {"fp8": ("weight", "weight_scale"), "w8a8": ("weight", "weight_scale"),
                "awq": ("qweight", "qzeros", "scales"), "gptq": ("qweight", "qzeros", "scales", "g_idx")}


def expert_parts(q: dict) -> tuple[str, ...]:
    """EXPERT_PARTS for this spec; compressed-tensors pack-quantized (a gptq spec) has its own
    names, a zero point only when asymmetric and a g_idx only with actorder."""
    if q.get("format") != "pack-quantized":
        return EXPERT_PARTS[q["method"]]
    return ("weight_packed", "weight_scale", "weight_shape") + (() if q.get("sym", True) else ("weight_zero_point",)) \
        + (("weight_g_idx",) if q.get("desc_act") else ())


def dequantize_expert(q: dict, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """One expert matrix [out, in] in float, from its checkpoint tensors ``t`` (expert_parts)."""
    m = q["method"]
    if m == "fp8":
        if t["weight"].dtype != torch.float8_e4m3fn:
            raise ValueError(f"an fp8 expert weight of dtype {t['weight'].dtype}; expected float8_e4m3fn")
        return fp8_dequantize_weight(t["weight"], t["weight_scale"], q.get("block"))
    if m == "w8a8":
        if t["weight"].dtype != torch.int8:
            raise ValueError(f"a w8a8 expert weight of dtype {t['weight'].dtype}; expected int8")
        s = t["weight_scale"].float()
        return t["weight"].float() * (s.reshape(()) if s.numel() == 1 else s.reshape(-1, 1))
    if m == "awq":
        return awq_dequantize(t["qweight"], t["scales"].float(), t["qzeros"], int(q["group_size"])).t()
    bits = int(q["bits"])
    if q.get("format") == "pack-quantized":   # re-laid as the dense layer re-lays it, into GPTQ's tensors
        N, K = (int(v) for v in t["weight_shape"].reshape(-1))
        g = dict(pack_as_gptq(k, v, bits, N, K) for k, v in t.items() if k != "weight_shape")
        if "qzeros" not in g:                 # symmetric: every zero is 2^(bits-1)
            g["qzeros"] = gptq_pack_cols(torch.full((g["scales"].shape[0], N), 1 << (bits - 1)), bits)
        if "g_idx" not in g:
            g["g_idx"] = torch.arange(K) // (K if int(q["group_size"]) <= 0 else int(q["group_size"]))
        return gptq_dequantize(g["qweight"], g["qzeros"], g["scales"].float(), g["g_idx"], bits).t()
    zeros = gptq_v1_to_v2_zeros(t["qzeros"], q["bits"]) if q.get("format", "v1") == "v1" else t["qzeros"]
    return gptq_dequantize(t["qweight"], zeros, t["scales"].float(), t["g_idx"], q["bits"]).t()


@dataclass(frozen=True)
class RouteSpec:
    """How a family routes (the arguments of Ops.moe_route, plus the router's own shape)."""

    top_k: int
    scoring: str = "softmax"
    renormalize: bool = True
    num_groups: int | None = None
    topk_groups: int | None = None
    routed_scaling: float = 1.0
    correction_bias: bool = False     # gate.e_score_correction_bias (DeepSeek-V3 / GLM-4.5)
    router_bias: bool = False         # gate.bias (gpt-oss)
    fp32_router: bool = False         # router weight and GEMM in float32, as DeepSeek and GLM compute it


class Router(nn.Module):
    """logits = x @ weight^T (+ bias): [T, E] float32 when fp32, else the model dtype."""

    def __init__(self, ctx: ModelContext, hidden: int, num_experts: int, spec: RouteSpec):
        super().__init__()
        self.ops = ctx.ops
        self.fp32 = spec.fp32_router
        dtype = torch.float32 if spec.fp32_router else ctx.dtype
        self.weight = nn.Parameter(torch.empty(num_experts, hidden, dtype=dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(num_experts, dtype=dtype), requires_grad=False) \
            if spec.router_bias else None
        self.e_score_correction_bias = nn.Parameter(torch.zeros(num_experts, dtype=torch.float32),
                                                    requires_grad=False) if spec.correction_bias else None

    def forward(self, x):
        return self.ops.linear(x.float() if self.fp32 else x, self.weight, self.bias)


class FusedExperts(nn.Module):
    """E gated MLPs stacked for Ops.fused_moe.  ``names`` maps a checkpoint's per-expert
    matrix names onto (parameter, shard) so checkpoints load one expert matrix at a time.

    With several ranks the output is this rank's partial sum (SparseMoE all-reduces it):
    expert parallel (``ctx.expert_parallel``) keeps experts [start, start + E/N) whole and
    the kernel sees only those (tokens routed elsewhere get weight 0 on local expert 0);
    otherwise every expert's intermediate channels are split, as a GatedMLP's are.
    """

    def __init__(self, ctx: ModelContext, num_experts: int, hidden: int, intermediate: int,
                 activation: str = "silu", bias: bool = False, names: dict | None = None):
        super().__init__()
        q = ctx.quant or {}
        method = q.get("method")
        if q and (method not in EXPERT_PARTS or q.get("static_input")):
            what = f"{method} with a static input scale" if q.get("static_input") else method
            raise NotImplementedError(f"{what} quantized MoE experts are not supported yet (read: "
                                      f"{', '.join(sorted(EXPERT_PARTS))} (and pack-quantized) with dynamic "
                                      "activations, each expert dequantized at load for fused_moe)")
        # Quantized experts (DeepSeek-V3 / Qwen3-MoE FP8, AWQ / GPTQ / W8A8 MoE checkpoints): each
        # expert matrix is dequantized to the model dtype once all its tensors have arrived
        # (_pending), so fused_moe runs them as it runs bf16 experts: no memory saved on them,
        # and their inputs are not quantized
        self.quant = q if q else None
        self._pending: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        self.ops = ctx.ops
        self.tp = tp = ctx.tp
        self.activation = activation
        self.total_experts = num_experts
        self.expert_parallel = ep = ctx.expert_parallel and tp.is_parallel
        self.expert_start, E = split_evenly(num_experts, tp.size, tp.rank, "the number of experts") if ep \
            else (0, num_experts)
        self.inter_start, I = (0, intermediate) if ep else \
            split_evenly(intermediate, tp.size, tp.rank, "the experts' intermediate size")
        self.num_experts, self.intermediate, self.full_intermediate = E, I, intermediate
        H = hidden
        self.w13 = nn.Parameter(torch.empty(E, 2 * I, H, dtype=ctx.dtype), requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(E, H, I, dtype=ctx.dtype), requires_grad=False)
        self.w13_bias = nn.Parameter(torch.empty(E, 2 * I, dtype=ctx.dtype), requires_grad=False) if bias else None
        self.w2_bias = nn.Parameter(torch.empty(E, H, dtype=ctx.dtype), requires_grad=False) if bias else None
        self.names = dict(names or GATE_UP_DOWN)
        self._pieces: dict[str, set] = {}

    def _local(self, param: str, shard, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's slice of one expert's checkpoint matrix (or bias) for ``param``."""
        if self.expert_parallel or not self.tp.is_parallel:
            return tensor
        a, n = self.inter_start, self.intermediate
        if param.startswith("w13"):                 # rows: intermediate channels of gate or up
            return tensor.narrow(0, a, n)
        if param == "w2":                           # [H, I]: columns
            return tensor.narrow(1, a, n)
        # w2_bias: summed over the ranks, so only rank 0 keeps it
        return tensor if self.tp.rank == 0 else torch.zeros_like(tensor)

    def load_expert(self, e: int, matrix: str, kind: str, tensor: torch.Tensor) -> str | None:
        """Copy expert ``e``'s ``matrix`` (a key of ``names``) weight or bias into place.
        Returns the parameter's name once every local expert's piece of it has arrived, else None."""
        if matrix not in self.names:
            raise KeyError(f"expert matrix {matrix!r} is not one of {sorted(self.names)}")
        param, shard = self.names[matrix]
        if kind == "bias":
            param += "_bias"
        p = getattr(self, param)
        if p is None:
            raise KeyError(f"the checkpoint has an expert {kind} for {matrix!r}, the model was built without one")
        if not 0 <= e < self.total_experts:
            raise IndexError(f"expert {e} out of range: the config declares {self.total_experts} experts")
        e -= self.expert_start
        if not 0 <= e < self.num_experts:
            return None                             # another rank's expert
        if kind != "bias" and (kind != "weight" or not tensor.is_floating_point()
                               or tensor.dtype == torch.float8_e4m3fn):
            tensor = self._quant_piece(e, matrix, kind, tensor)
            if tensor is None:
                return None                         # some of its tensors are still to come
        tensor = self._local(param, shard, tensor)
        dst = p.data[e] if shard is None else p.data[e, shard * self.intermediate:(shard + 1) * self.intermediate]
        if dst.shape != tensor.shape:
            raise ValueError(f"expert {e} {matrix}.{kind}: shape {tuple(tensor.shape)}, expected {tuple(dst.shape)}")
        dst.copy_(tensor)
        got = self._pieces.setdefault(param, set())
        got.add((e, shard))
        need = self.num_experts * (1 if shard is None else 2)
        return param if len(got) == need else None

    def _quant_piece(self, e: int, matrix: str, kind: str, tensor: torch.Tensor) -> torch.Tensor | None:
        """Hold a quantized expert matrix's tensors until all have arrived; then the matrix
        [out, in] dequantized to the model dtype (the core's reference dequantization)."""
        q = self.quant
        if q is None:
            raise ValueError(f"expert {e} {matrix}: a quantized {kind} ({tensor.dtype}) in a checkpoint without a "
                             "quantization_config")
        kind = "weight_scale" if q["method"] == "fp8" and kind in FP8_SCALES else kind
        parts = expert_parts(q)
        if kind not in parts:
            raise ValueError(f"expert {e} {matrix}: a {kind} tensor in a {q['method']} checkpoint; its experts "
                             f"carry {', '.join(parts)}")
        got = self._pending.setdefault((e, matrix), {})
        got[kind] = tensor
        if len(got) < len(parts):
            return None
        del self._pending[(e, matrix)]
        return dequantize_expert(q, got).to(self.w13.dtype)

    def load(self, param_name: str, tensor: torch.Tensor, shard: int = 0, source: str | None = None) -> None:
        """A checkpoint that stores all experts stacked (gpt-oss): w13 [E, 2I, H] (gate rows,
        then up rows), w2 [E, H, I] and their biases, sliced to this rank's share."""
        if tensor.dtype == torch.float8_e4m3fn:
            raise ValueError(f"stacked expert tensor {param_name} in fp8: only per-expert FP8 matrices "
                             "(experts.<e>.<matrix>.weight with their scales) are read")
        p = getattr(self, param_name)
        t = tensor.narrow(0, self.expert_start, self.num_experts)
        if self.tp.is_parallel and not self.expert_parallel:
            if param_name.startswith("w13"):
                gate, up = t.split(self.full_intermediate, dim=1)
                t = torch.cat([self._local(param_name, 0, g.transpose(0, 1)).transpose(0, 1)
                               for g in (gate, up)], dim=1)
            else:
                t = torch.stack([self._local(param_name, None, x) for x in t.unbind(0)])
        if p.shape != t.shape:
            raise ValueError(f"stacked expert tensor {param_name}: shape {tuple(tensor.shape)} gives "
                             f"{tuple(t.shape)} on this rank, expected {tuple(p.shape)}")
        p.data.copy_(t)

    def forward(self, x, topk_weights, topk_ids):
        if self.expert_parallel:
            local = topk_ids - self.expert_start
            inside = (local >= 0) & (local < self.num_experts)
            topk_ids = local.masked_fill(~inside, 0)
            topk_weights = topk_weights.masked_fill(~inside, 0.0)
        return self.ops.fused_moe(x, self.w13, self.w2, topk_weights, topk_ids, activation=self.activation,
                                  w13_bias=self.w13_bias, w2_bias=self.w2_bias)


class SparseMoE(nn.Module):
    """x -> sum of the routed experts' outputs (+ the shared expert's).

    shared_intermediate: width of the always-on shared expert (None: none); it is
    stored under ``shared_name``; shared_gate: Qwen2-MoE's sigmoid(x @ g) factor on it.
    """

    def __init__(self, ctx: ModelContext, hidden: int, num_experts: int, intermediate: int, route: RouteSpec, *,
                 activation: str = "silu", expert_bias: bool = False, expert_names: dict | None = None,
                 shared_intermediate: int | None = None, shared_name: str = "shared_experts",
                 shared_gate: bool = False):
        super().__init__()
        self.ops = ctx.ops
        self.route_spec = route
        self.gate = Router(ctx, hidden, num_experts, route)
        self.experts = FusedExperts(ctx, num_experts, hidden, intermediate, activation, expert_bias, expert_names)
        self.tp = ctx.tp
        self.shared_name = shared_name if shared_intermediate else None
        if shared_intermediate:  # left partial: combine() sums it with the experts' in one all-reduce
            setattr(self, shared_name, GatedMLP(ctx, hidden, shared_intermediate, reduce=False))
        self.shared_expert_gate = Linear(ctx, hidden, 1, quantize=False) if shared_gate else None

    def route(self, logits: torch.Tensor):
        """(weights float32 [T, k], ids int32 [T, k]).  Families with their own rule override this."""
        r = self.route_spec
        return self.ops.moe_route(logits, r.top_k, scoring=r.scoring, renormalize=r.renormalize,
                                  num_groups=r.num_groups, topk_groups=r.topk_groups,
                                  correction_bias=self.gate.e_score_correction_bias, routed_scaling=r.routed_scaling)

    def shared(self, x):
        if self.shared_name is None:
            return None
        s = getattr(self, self.shared_name)(x)
        if self.shared_expert_gate is not None:
            s = torch.sigmoid(self.shared_expert_gate(x)) * s
        return s

    def combine(self, out, x):
        """The experts' output plus the shared expert's, summed over the ranks."""
        s = self.shared(x)
        return self.tp.all_reduce(out if s is None else out + s)

    def forward(self, x):
        weights, ids = self.route(self.gate(x))
        return self.combine(self.experts(x, weights, ids), x)


_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)\."
                     r"(weight|bias|weight_scale_inv|weight_scale|qweight|qzeros|scales|g_idx|"
                     r"weight_packed|weight_zero_point|weight_g_idx|weight_shape)$")


class ExpertLoading:
    """Mixin for a CausalLM: places per-expert checkpoint matrices
    (``...experts.<e>.<matrix>.weight``) into the stacked FusedExperts parameters."""

    def claim_weight(self, name, tensor, modules):
        m = _EXPERT.match(name)
        if m is None or not isinstance(modules.get(m[1]), FusedExperts):
            return None
        done = modules[m[1]].load_expert(int(m[2]), m[3], m[4], tensor)
        # Only a complete stack counts as loaded, so a missing expert shows as a missing parameter.
        return f"{m[1]}.{done}" if done else f"{name} (part of a stacked expert parameter)"


def fused_expert_tensor(name: str, t: torch.Tensor, hidden: int, intermediate: int):
    """(our name, tensor) for a stacked expert tensor as transformers' fused experts keep
    them: ``...experts.gate_up_proj`` (gate rows, then up rows) and ``...experts.down_proj``;
    None for any other name.  Both orientations are read, told apart by shape as
    transformers' loader does (a tensor already in the module's shape is taken as is): the
    module's own, [E, 2I, H] / [E, H, I], which transformers 5 save_pretrained writes, and
    the transposed [E, H, 2I] / [E, I, H] of the published Qwen3-VL-MoE checkpoints."""
    for suffix, ours, want in (("gate_up_proj", "w13", (2 * intermediate, hidden)),
                               ("down_proj", "w2", (hidden, intermediate))):
        if not name.endswith(".experts." + suffix):
            continue
        base = name[: -len(suffix)] + ours
        if t.ndim == 3 and tuple(t.shape[1:]) == want:
            return base, t
        if t.ndim == 3 and tuple(t.shape[1:]) == want[::-1]:
            return base, t.transpose(1, 2)
        raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(t.shape)}; expected [E, {want[0]}, {want[1]}] "
                         f"or its transpose [E, {want[1]}, {want[0]}]")
    return None


def num_experts(cfg) -> int:
    """The routed expert count under any of the names configs use."""
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if cfg.get(key):
            return int(cfg.get(key))
    raise ValueError("config names no expert count (num_experts / num_local_experts / n_routed_experts)")
