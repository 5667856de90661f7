"""``Backend``: everything the core needs to know about one kind of device.

A plugin hands the core one ``Backend`` per device it drives.  Every difference
between devices is a field or a method here; the core never asks "which vendor
is this?".  Subclasses set the class attributes and override the methods whose
defaults do not fit.  If a plugin needs something this class cannot express,
the contract grows here (and CONTRACT_VERSION is bumped when it breaks).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .attention import MetadataBuilder
    from .graph import GraphAPI
    from .runtime import DeviceRuntime
    from .ops import Ops

# Bump when a change to Backend / Ops / AttentionMetadata breaks existing plugins.
CONTRACT_VERSION = 2

# KV layouts a backend may declare.  Each names the per-layer cache shape:
#   "NHD": (num_blocks, block_size, num_kv_heads, head_dim)   CUDA, Ascend, MACA
#   "HND": (num_blocks, num_kv_heads, block_size, head_dim)   Cambricon
KV_LAYOUTS = ("NHD", "HND")

# Columns of the support matrix, as the seed writes them.
SUPPORT_COLUMNS = ("FP16/BF16", "KV INT8", "KV INT4", "W8A8", "W4A16", "FP8")  # FP8: beyond the seed
# A backend's quantization fields in the support columns' words: `halinfer devices` and
# `halinfer support` both print these, so the two never disagree.
QUANT_COLUMNS = {("kv", "int8"): "KV INT8", ("kv", "int4"): "KV INT4", ("weight", "w8a8"): "W8A8",
                 ("weight", "awq"): "W4A16", ("weight", "gptq"): "W4A16", ("weight", "fp8"): "FP8"}


def quant_columns(weight_quant, kv_cache_dtypes) -> list[str]:
    """The support columns a backend's own fields say it implements (ops exist, the engine accepts them)."""
    have = {("weight", w) for w in weight_quant} | {("kv", k) for k in kv_cache_dtypes}
    return list(dict.fromkeys(c for key, c in QUANT_COLUMNS.items() if key in have))


@dataclass(frozen=True)
class SupportDecl:
    """One backend's claim about one model family.

    ``columns`` maps a support column (see SUPPORT_COLUMNS, optionally suffixed
    with a mode such as "FP16/BF16(graph)") to True (claimed) or False (known
    unsupported).  ``hardware_verified`` lists the columns a test has passed on
    real hardware of this backend; everything else is only declared.
    ``variant`` names the hardware variant the claim is about when a backend's
    devices differ (e.g. "Atlas 800T A2" vs "Atlas 300I Duo" for one NPU
    plugin); "" means every device the backend drives.  A backend with
    variants declares one SupportDecl per (family, variant).
    """

    family: str
    columns: dict[str, bool]
    hardware_verified: frozenset[str] = frozenset()
    note: str = ""
    variant: str = ""


class Backend:
    # ---- identity -------------------------------------------------------
    contract_version: int = CONTRACT_VERSION
    name: str = ""                      # "cuda", "ascend", ...
    aliases: tuple[str, ...] = ()       # "npu" for ascend, "mlu" for camb
    description: str = ""               # one line for `halinfer devices`
    device_type: str = "cpu"            # torch device type: "cpu", "cuda", "npu", "mlu"
    priority: int = 0                   # higher wins for device="auto"
    dist_backend: str = "gloo"          # torch.distributed backend: nccl / hccl / cncl / gloo ("": none)
    graph_collectives: bool = False     # its collectives may run inside captured graphs (NCCL: yes)

    # ---- KV cache -------------------------------------------------------
    kv_layout: str = "NHD"
    block_sizes: tuple[int, ...] = (16, 32, 64, 128)
    default_block_size: int = 16
    kv_cache_dtypes: tuple[str, ...] = ("auto",)   # "auto" (= model dtype), "int8", "int4", "fp8"

    # ---- numerics and modes ----------------------------------------------
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
    weight_quant: tuple[str, ...] = ()             # "awq", "gptq" (W4A16), "w8a8", "fp8"
    graph_modes: tuple[str, ...] = ("eager",)      # "eager" always; "graph" if graph_api() gives an API

    # ---- availability ---------------------------------------------------
    def available(self) -> tuple[bool, str]:
        """(ok, reason).  Must not raise; the reason is shown to the user as is."""
        return True, "ok"

    def device_count(self) -> int:
        return 1

    def versions(self) -> dict[str, tuple[str, str]]:
        """name -> (required, installed) for `halinfer doctor`."""
        return {"torch": (">=2.4,<2.15", torch.__version__)}

    # ---- the parts a plugin provides ---------------------------------------
    @functools.cached_property
    def ops(self) -> "Ops":
        """The operator table.  Default: the core's torch reference."""
        from .ops import Ops

        return Ops()

    def metadata_builder(self, device: torch.device, block_size: int) -> "MetadataBuilder":
        from .attention import MetadataBuilder

        return MetadataBuilder(device, block_size)

    def graph_api(self, device: torch.device) -> "GraphAPI | None":
        """What the core captures decode graphs with on ``device``; None: no graphs (eager only)."""
        return None

    def default_max_num_seqs(self, index: int | None) -> int:
        """The sequence cap when the user names none: 256, as vLLM and LMDeploy use on most devices."""
        return 256

    def graph_capture_sizes(self, max_num_seqs: int) -> list[int]:
        """Decode batch sizes to capture (graph backends): steps of 8 to 256, 16 to 512, 32
        beyond, up to max_num_seqs (always captured itself, so a full batch never runs eagerly)."""
        sizes = [1, 2, 4] + list(range(8, 257, 8)) + list(range(272, 513, 16)) + \
            list(range(544, max(max_num_seqs, 544) + 1, 32))
        out = [s for s in sizes if s < max_num_seqs]
        return out + [max_num_seqs]

    # ---- device and memory ----------------------------------------------
    def torch_device(self, index: int | None) -> torch.device:
        if index is None:
            return torch.device(self.device_type)
        return torch.device(self.device_type, index)

    def runtime(self, device: torch.device) -> "DeviceRuntime":
        """Memory and queue queries bound to ``device``.  Default: the host's for a CPU
        device, else torch's device module for its type (override to hand another module)."""
        from .runtime import CpuRuntime, DeviceRuntime

        device = torch.device(device)
        return CpuRuntime(device) if device.type == "cpu" else DeviceRuntime(device)

    # ---- KV cache allocation --------------------------------------------
    def kv_cache_shape(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple:
        if self.kv_layout == "NHD":
            return (num_blocks, block_size, num_kv_heads, head_dim)
        if self.kv_layout == "HND":
            return (num_blocks, num_kv_heads, block_size, head_dim)
        raise ValueError(f"{self.name}: unknown kv_layout {self.kv_layout!r}; known: {KV_LAYOUTS}")

    def allocate_kv_cache(self, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=device)

    # ---- random numbers ---------------------------------------------------
    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    # ---- model support declarations ---------------------------------------
    def support(self) -> list[SupportDecl]:
        """Model families this backend claims (see ``halinfer support``)."""
        return []

    def variant(self) -> str:
        """The hardware variant of the device in hand, as SupportDecl.variant names it
        ("" when the backend's claims do not differ by variant or none is detected)."""
        return ""

    # ---- descriptions ------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        ok, reason = self.available()
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "available": ok,
            "reason": reason,
            "device_type": self.device_type,
            "device_count": self.device_count() if ok else 0,
            "priority": self.priority,
            "dist_backend": self.dist_backend,
            "graph_collectives": self.graph_collectives,
            "kv_layout": self.kv_layout,
            "block_sizes": list(self.block_sizes),
            "dtypes": [str(d).replace("torch.", "") for d in self.dtypes],
            "kv_cache_dtypes": list(self.kv_cache_dtypes),
            "weight_quant": list(self.weight_quant),
            "graph_modes": list(self.graph_modes),
        }

    def __repr__(self) -> str:
        return f"<Backend {self.name}>"


@dataclass
class ResolvedDevice:
    backend: Backend
    index: int | None
    torch_device: torch.device = field(init=False)

    def __post_init__(self):
        self.torch_device = self.backend.torch_device(self.index)
