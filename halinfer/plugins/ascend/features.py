"""What the installed torch_npu's op-plugin offers, read once when the ops are built.

``torch_npu.X`` is ``torch.ops.npu.X`` (torch_npu/__init__.py copies every op of the
namespace), so an op the pinned op-plugin lacks is simply absent, and the arguments
of one that exists are those of ``torch_npu.X.default._schema``.  Probing beats a
version table: the pins move between point releases (docs/vendors.md, torch_npu).
"""
from __future__ import annotations

from dataclasses import dataclass


def schema_args(torch_npu, op: str) -> frozenset[str]:
    """Argument names of torch_npu.<op>'s default overload (empty if absent or unreadable)."""
    try:
        return frozenset(a.name for a in getattr(torch_npu, op).default._schema.arguments)
    except Exception:  # noqa: BLE001 - no op, or an object without a schema
        return frozenset()


@dataclass(frozen=True)
class OpFeatures:
    rotary_mode: bool          # npu_apply_rotary_pos_emb(..., rotary_mode=): op-plugin 7dee02b on
    moe_token_unpermute: bool  # npu_moe_token_unpermute: absent at 7b9ce1c (v2.5.1-7.0.0)

    @classmethod
    def probe(cls, torch_npu) -> "OpFeatures":
        return cls(rotary_mode="rotary_mode" in schema_args(torch_npu, "npu_apply_rotary_pos_emb"),
                   moe_token_unpermute=hasattr(torch_npu, "npu_moe_token_unpermute"))

    def describe(self) -> str:
        return ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in self.__dict__.items())
