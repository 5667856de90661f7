"""How a Linear holds, loads and runs each weight format: one small method object per format.

A method creates the layer's parameters, copies checkpoint tensors into them (one logical
matrix, a "shard", at a time for merged layers such as qkv: ``layer.shard_range``) after
converting them to the op's layout, and runs the op.  A checkpoint that leaves a module
unquantized (AutoAWQ's modules_to_not_convert, compressed-tensors' ignore) ships it as a
plain floating-point ``weight``: the layer then switches to the dense method on the spot.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.ops.gptq import gptq_pack_cols, gptq_pack_rows, gptq_unpack_cols, gptq_unpack_rows, gptq_v1_to_v2_zeros
from ..core.ops.deferred import GatedInput, NormedInput
from ..core.ops.norm_quant import ActQuant, QuantizedActs


def _param(layer, name, shape, dtype, fill=None):
    t = torch.empty(shape, dtype=dtype) if fill is None else torch.full(shape, fill, dtype=dtype)
    setattr(layer, name, nn.Parameter(t, requires_grad=False))


def _float_weight(name: str, tensor: torch.Tensor) -> bool:
    return name == "weight" and tensor.is_floating_point() and tensor.element_size() >= 2


class DenseMethod:
    name = None

    def create(self, layer, dtype):
        _param(layer, "weight", (layer.out_features, layer.in_features), dtype)

    def load(self, layer, name, tensor, shard):
        a, b = layer.shard_range(shard)
        getattr(layer, name).data[a:b].copy_(tensor)

    def apply(self, layer, x, bias):
        return layer.ops.linear(x, layer.weight, bias)


class AwqMethod:
    """AutoAWQ GEMM: qweight/qzeros [K, N/8] (packed along N), scales [K/g, N]."""
    name = "awq"

    def __init__(self, spec):
        self.group = int(spec["group_size"])

    def create(self, layer, dtype):
        n, k, g = layer.out_features, layer.in_features, self.group
        _param(layer, "qweight", (k, n // 8), torch.int32)
        _param(layer, "qzeros", (-(-k // g), n // 8), torch.int32)
        _param(layer, "scales", (-(-k // g), n), dtype)

    def load(self, layer, name, tensor, shard):
        a, b = layer.shard_range(shard, 8 if name in ("qweight", "qzeros") else 1)
        if name == "bias":
            layer.bias.data[a:b].copy_(tensor)
        else:
            getattr(layer, name).data[:, a:b].copy_(tensor)

    # takes a deferred norm's NormedInput / activation's GatedInput (models/norm_quant_plan.py)
    takes_deferred_input = True

    def apply(self, layer, x, bias):
        if isinstance(x, NormedInput):
            return layer.ops.w4a16_linear_normed(x, layer.qweight, layer.scales, layer.qzeros, self.group, bias)
        if isinstance(x, GatedInput):
            return layer.ops.w4a16_linear_gated(x, layer.qweight, layer.scales, layer.qzeros, self.group, bias)
        return layer.ops.w4a16_linear(x, layer.qweight, layer.scales, layer.qzeros, self.group, bias)


class GptqMethod:
    """GPTQ: qweight [K*b/32, N] (packed along K), qzeros [G, N*b/32], scales [G, N], g_idx [K].
    v1 zeros (stored as zero - 1) become true zeros on load, the op's convention.  When the
    model is loaded (finish_loading), the backend's Ops.prepare_gptq re-lays the four tensors
    once; they replace the parameters of the same names (another shape, or None), extra
    tensors become buffers ``gptq_<key>``, extra plain values stay here, and every call passes
    them all back to gptq_linear."""
    name = "gptq"
    _KEYS = ("qweight", "qzeros", "scales", "g_idx")

    def __init__(self, spec):
        self.bits, self.v1 = int(spec["bits"]), spec.get("format", "v1") == "v1"
        self.group = int(spec["group_size"])
        self.desc_act = bool(spec.get("desc_act", False))
        self.pack = 32 // self.bits
        self.prepared = False
        self.extra_values: dict = {}      # prepare_gptq's non-tensor extras
        self.extra_tensors: tuple = ()    # its tensor extras' keys (buffers gptq_<key>)

    def create(self, layer, dtype):
        n, k = layer.out_features, layer.in_features
        g = k if self.group <= 0 else self.group
        groups = -(-k // g)
        _param(layer, "qweight", (k // self.pack, n), torch.int32)
        _param(layer, "qzeros", (groups, n // self.pack), torch.int32)
        _param(layer, "scales", (groups, n), dtype)
        layer.g_idx = nn.Parameter(torch.arange(k, dtype=torch.int32) // g, requires_grad=False)

    def load(self, layer, name, tensor, shard):
        if name == "g_idx":
            # The checkpoint tensor arrives on the CPU; the parameter may already live on the device.
            if getattr(layer, "g_idx_loaded", False) and not torch.equal(
                    layer.g_idx.data, tensor.to(device=layer.g_idx.device, dtype=torch.int32)):
                raise ValueError("the matrices of a merged GPTQ layer (e.g. q, k, v) carry different g_idx; "
                                 "halinfer needs one act-order permutation per input")
            layer.g_idx.data.copy_(tensor)
            layer.g_idx_loaded = True
            return
        if name == "qzeros" and self.v1:
            tensor = gptq_v1_to_v2_zeros(tensor, self.bits)
        a, b = layer.shard_range(shard, self.pack if name == "qzeros" else 1)
        if name == "bias":
            layer.bias.data[a:b].copy_(tensor)
        else:
            getattr(layer, name).data[:, a:b].copy_(tensor)

    def after_dummy_init(self, layer):
        """desc_act: a random act-order g_idx (a permutation of the plain groups, as GPTQ's
        act-order writes), so that benchmarks on random weights run the act-order path."""
        if self.desc_act and self.group > 0:
            k = layer.in_features
            perm = torch.randperm(k, generator=torch.Generator().manual_seed(k))
            g = torch.empty(k, dtype=torch.int32)
            g[perm] = torch.arange(k, dtype=torch.int32) // self.group
            layer.g_idx.data.copy_(g)

    def after_loading(self, layer):
        """The backend's one-time re-layout (Ops.prepare_gptq); the originals are dropped."""
        if self.prepared:
            return
        out = layer.ops.prepare_gptq(layer.qweight.data, layer.qzeros.data, layer.scales.data, layer.g_idx.data,
                                     self.bits)
        missing = [k for k in self._KEYS if k not in out]
        if missing:
            raise ValueError(f"{type(layer.ops).__name__}.prepare_gptq returned no {missing} (Ops.prepare_gptq)")
        for key in self._KEYS:
            t = out[key]
            # a new Parameter (the shape may change); None drops the tensor
            setattr(layer, key, None if t is None else nn.Parameter(t, requires_grad=False))
        tensors = []
        for key, v in out.items():
            if key in self._KEYS:
                continue
            if isinstance(v, torch.Tensor):
                layer.register_buffer(f"gptq_{key}", v, persistent=False)
                tensors.append(key)
            else:
                self.extra_values[key] = v
        self.extra_tensors = tuple(tensors)
        self.prepared = True

    def apply(self, layer, x, bias):
        extra = self.extra_values
        if self.extra_tensors:
            extra = {**extra, **{k: getattr(layer, f"gptq_{k}") for k in self.extra_tensors}}
        return layer.ops.gptq_linear(x, layer.qweight, layer.qzeros, layer.scales, layer.g_idx, self.bits,
                                     bias, **extra)


class PackQuantizedMethod(GptqMethod):
    """compressed-tensors "pack-quantized" (llm-compressor's W4A16 / W8A16), re-laid into GPTQ's
    tensors (true zeros) as each arrives, so every backend runs it as GPTQ:
      weight_packed int32 [N, K*b/32]  value i of word c is input (32/b)c + i  -> qweight [K*b/32, N]
      weight_scale [N, G]                                                   -> scales [G, N]
      weight_zero_point int32 [N*b/32, G] (asymmetric; value i of row r is output (32/b)r + i)
                                                                            -> qzeros [G, N*b/32]
      weight_g_idx [K] (actorder "group")                                   -> g_idx
    Codes and zeros are stored as the signed value + 2^(b-1); their difference is what GPTQ's
    unsigned codes and true zeros give, so both are copied as stored.  A symmetric checkpoint
    has no zero tensor: every zero is 2^(b-1)."""

    def __init__(self, spec):
        super().__init__({**spec, "format": "v2"})
        self.sym = bool(spec.get("sym", True))
        # checkpoint tensor -> the parameters it fills (Linear.fills): a symmetric checkpoint's
        # zeros and a plain-group one's g_idx are implied, set by create
        self.checkpoint_names = {
            "weight_packed": ("qweight",) if self.desc_act else ("qweight", "g_idx"),
            "weight_scale": ("scales", "qzeros") if self.sym else ("scales",),
            "weight_zero_point": ("qzeros",), "weight_g_idx": ("g_idx",), "weight_shape": ()}

    def create(self, layer, dtype):
        super().create(layer, dtype)
        if self.sym:
            layer.qzeros.data.copy_(gptq_pack_cols(torch.full((layer.qzeros.shape[0], layer.out_features),
                                                              1 << (self.bits - 1)), self.bits))

    def load(self, layer, name, tensor, shard):
        if name == "weight_shape":
            a, b = layer.shard_range(shard)
            if tuple(int(v) for v in tensor.reshape(-1)) != (b - a, layer.in_features):
                raise ValueError(f"pack-quantized weight_shape {tuple(tensor.tolist())} does not match the "
                                 f"layer's matrix ({b - a}, {layer.in_features})")
            return
        a, b = layer.shard_range(shard)
        if name == "weight_zero_point" and (tensor.dtype != torch.int32 or tensor.shape[0] != -(-(b - a) // self.pack)):
            raise ValueError(f"pack-quantized weight_zero_point {tuple(tensor.shape)} {tensor.dtype}: expected "
                             f"int32 packed along the {b - a} output rows ({-(-(b - a) // self.pack)} rows)")
        if name in PACK_TO_GPTQ:
            return super().load(layer, *pack_as_gptq(name, tensor, self.bits, b - a, layer.in_features), shard)
        return super().load(layer, name, tensor, shard)


PACK_TO_GPTQ = {"weight_packed": "qweight", "weight_scale": "scales", "weight_zero_point": "qzeros",
                "weight_g_idx": "g_idx"}


def pack_as_gptq(name: str, t: torch.Tensor, bits: int, n: int, k: int) -> tuple[str, torch.Tensor]:
    """A pack-quantized tensor of an [n, k] matrix as the GPTQ tensor it becomes (PackQuantizedMethod's
    table): codes and zeros are copied as stored, their difference being GPTQ's."""
    if name == "weight_packed":
        codes = gptq_unpack_cols(t.to(torch.int32), bits)[:, :k]                          # [n, K]
        return "qweight", gptq_pack_rows(codes.t().contiguous(), bits)
    if name == "weight_zero_point":
        return "qzeros", gptq_pack_cols(gptq_unpack_rows(t, bits)[:n].t().contiguous(), bits)
    return PACK_TO_GPTQ[name], t.t() if name == "weight_scale" else t


class W8A8Method:
    """int8 weight [N, K] with a float32 scale per output row ([N, 1], [N] or one per tensor in
    the checkpoint, any float dtype)."""
    name = "w8a8"

    def create(self, layer, dtype):
        _param(layer, "weight", (layer.out_features, layer.in_features), torch.int8)
        _param(layer, "weight_scale", (layer.out_features,), torch.float32)

    def load(self, layer, name, tensor, shard):
        a, b = layer.shard_range(shard)
        if name == "weight_scale":
            layer.weight_scale.data[a:b].copy_(tensor.float().reshape(-1).expand(b - a))
        else:
            getattr(layer, name).data[a:b].copy_(tensor)

    def act_quant(self, layer) -> ActQuant:
        """The activation quantization apply does itself: what a norm may do for it
        (models/norm_quant_plan.py); apply then takes QuantizedActs in place of x."""
        return ActQuant("int8")

    def apply(self, layer, x, bias):
        if isinstance(x, QuantizedActs):
            return layer.ops.w8a8_linear_prequant(x, layer.weight, layer.weight_scale, bias)
        return layer.ops.w8a8_linear(x, layer.weight, layer.weight_scale, bias)


class Fp8Method:
    """float8_e4m3fn weight [N, K]; scales held per output row and input group, float32
    [N, ceil(K/block_k)] (core/ops/fp8.py): a block-scaled checkpoint's [N/bn, K/bk]
    ``weight_scale_inv`` is repeated over each block's rows, a per-channel [N, 1] or
    per-tensor scale is one group of K.  The scale parameter keeps the checkpoint's name:
    ``weight_scale_inv`` (block FP8 as DeepSeek-V3 publishes it) or ``weight_scale``
    (compressed-tensors)."""
    name = "fp8"

    def __init__(self, spec):
        self.block = spec.get("block")
        self.static = bool(spec.get("static_input"))
        self.scale_name = "weight_scale" if spec.get("format") == "compressed-tensors" else "weight_scale_inv"

    def create(self, layer, dtype):
        n, k = layer.out_features, layer.in_features
        self.block_k = self.block[1] if self.block else k
        _param(layer, "weight", (n, k), torch.float8_e4m3fn)
        _param(layer, self.scale_name, (n, -(-k // self.block_k)), torch.float32)
        if self.static:
            _param(layer, "input_scale", (), torch.float32, fill=0.0)

    def load(self, layer, name, tensor, shard):
        a, b = layer.shard_range(shard)
        if name == self.scale_name:
            t = tensor.float()
            if self.block and t.shape[0] != b - a:
                # blocks of rows as published; a fused matrix's part arrives one row each (fused.py)
                t = t.repeat_interleave(self.block[0], dim=0)[: b - a]
            dst = getattr(layer, name).data
            dst[a:b].copy_(t.reshape(-1, t.shape[-1] if t.dim() == 2 else 1).expand(b - a, dst.shape[1]))
        elif name == "input_scale":
            # One activation scale for the merged matrices: the largest never clips.
            layer.input_scale.data.copy_(torch.maximum(layer.input_scale.data, tensor.float().reshape(())))
        elif name == "weight":
            if tensor.dtype != torch.float8_e4m3fn:
                raise ValueError(f"an fp8 checkpoint weight has dtype {tensor.dtype}; expected float8_e4m3fn")
            layer.weight.data[a:b].copy_(tensor)
        else:
            getattr(layer, name).data[a:b].copy_(tensor)

    def after_dummy_init(self, layer):
        """Random scales made constant over each block's rows, as a block-scaled checkpoint loads."""
        if self.block:
            s = getattr(layer, self.scale_name).data
            s.copy_(s[:: self.block[0]].abs().repeat_interleave(self.block[0], dim=0)[: s.shape[0]])

    def act_quant(self, layer) -> ActQuant | None:
        """Dynamic scales: per token in groups of block_k (one group per row when block_k is K);
        None with a static input scale, which leaves nothing for a norm to compute."""
        return None if self.static else ActQuant("fp8", self.block_k)

    def apply(self, layer, x, bias):
        if isinstance(x, QuantizedActs):
            return layer.ops.fp8_linear_prequant(x, layer.weight, getattr(layer, self.scale_name), self.block_k,
                                                 bias)
        return layer.ops.fp8_linear(x, layer.weight, getattr(layer, self.scale_name), self.block_k, bias,
                                    getattr(layer, "input_scale", None))


METHODS = {"awq": AwqMethod,
           "gptq": lambda spec: (PackQuantizedMethod if spec.get("format") == "pack-quantized" else GptqMethod)(spec),
           "w8a8": lambda spec: W8A8Method(), "fp8": Fp8Method}


def add_weight_placeholder(layer) -> None:
    """Formats without a ``weight`` parameter (AWQ, GPTQ) still answer to the name, so the
    loader hands a module the checkpoint left dense to ``load_into``; a non-persistent empty
    buffer is not a parameter, so nothing expects it to be loaded."""
    if not hasattr(layer, "weight"):
        layer.register_buffer("weight", torch.empty(0), persistent=False)


def make_method(spec: dict | None):
    if spec is None:
        return DenseMethod()
    if spec["method"] not in METHODS:
        raise ValueError(f"unknown quantization method {spec['method']!r}; supported: {', '.join(METHODS)}")
    return METHODS[spec["method"]](spec)


def load_into(layer, name: str, tensor: torch.Tensor, shard: int) -> None:
    """Linear.load's body: a dense weight in a quantized layer makes the layer dense (a module
    the checkpoint left unquantized); every other tensor goes to the layer's method."""
    if layer.qm.name is not None and _float_weight(name, tensor):
        if layer.loaded_quant_shards:
            raise ValueError(f"{layer.__class__.__name__}: some matrices of a merged layer are quantized and "
                             f"some are not; halinfer needs all or none")
        for pname in [n for n, _ in layer.named_parameters(recurse=False) if n != "bias"] + ["weight"]:
            if hasattr(layer, pname):
                delattr(layer, pname)
        layer.qm = DenseMethod()
        layer.qm.create(layer, layer.dtype)
    elif layer.qm.name is not None and name != "bias":
        layer.loaded_quant_shards.add(shard)
    layer.qm.load(layer, name, tensor, shard)
