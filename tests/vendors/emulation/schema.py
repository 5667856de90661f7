"""Calling an emulated op through a real op schema, as torch.ops does.

``SchemaOp(schema, impl)`` parses the schema string (torch._C.parse_schema) and binds
every call against it before the emulated ``impl`` runs: positional arguments only up
to the ``*``, keyword-only ones after it by name, no unknown or duplicate names, every
argument without a default given.  ``out=[a, b]`` fills the schema's written
keyword-only outputs in order (how vllm-ascend calls the FIA ``.out`` overload).

The impl receives by keyword the arguments its own signature names; every other
schema argument must have been left at its default ("not emulated" otherwise), or,
when the impl takes ``**kw``, is passed on only if the caller gave it.
"""
from __future__ import annotations

import inspect

import torch

from .checks import VendorArgError


def _default(a):
    return a.default_value if a.has_default_value() else None


def _at_default(v, a) -> bool:
    d = _default(a)
    if isinstance(v, torch.Tensor) or isinstance(d, torch.Tensor):
        return v is d
    return v == d or (v in (None, []) and d in (None, []))


class SchemaOp:
    def __init__(self, schema: str, impl, ns: str = "npu"):
        self._schema = torch._C.parse_schema(f"{ns}::{schema}")
        self.name = schema.split("(", 1)[0]
        self.__name__ = self.name.replace(".", "_")
        self.impl = impl
        params = inspect.signature(impl).parameters
        self._takes = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        self._rest = any(p.kind == p.VAR_KEYWORD for p in params.values())

    @property
    def arg_names(self) -> list[str]:
        return [a.name for a in self._schema.arguments]

    def bind(self, args, kwargs) -> tuple[dict, set]:
        """(value of every schema argument, names the caller gave)."""
        op, schema_args = self.name, list(self._schema.arguments)
        positional = [a for a in schema_args if not a.kwarg_only]
        if len(args) > len(positional):
            raise VendorArgError(f"{op}() takes {len(positional)} positional arguments but {len(args)} were given "
                                 f"(the rest are keyword-only)")
        given = {a.name: v for a, v in zip(positional, args)}
        kwargs = dict(kwargs)
        if "out" in kwargs and "out" not in self.arg_names:
            outs = [a for a in schema_args if a.kwarg_only and a.alias_info is not None and a.alias_info.is_write]
            vals = kwargs.pop("out")
            if not outs or not isinstance(vals, (list, tuple)) or len(vals) != len(outs):
                raise VendorArgError(f"{op}: out= must list {len(outs)} tensors ({[a.name for a in outs]})")
            kwargs.update({a.name: v for a, v in zip(outs, vals)})
        for name, v in kwargs.items():
            if name not in self.arg_names:
                raise VendorArgError(f"{op}() got an unexpected keyword argument '{name}'")
            if name in given:
                raise VendorArgError(f"{op}() got multiple values for argument '{name}'")
            given[name] = v
        missing = [a.name for a in schema_args if a.name not in given and not a.has_default_value()]
        if missing:
            raise VendorArgError(f"{op}() missing required arguments: {missing}")
        values = {a.name: given[a.name] if a.name in given else _default(a) for a in schema_args}
        return values, set(given)

    def __call__(self, *args, **kwargs):
        values, given = self.bind(args, kwargs)
        call = {}
        for a in self._schema.arguments:
            if a.name in self._takes:
                call[a.name] = values[a.name]
            elif self._rest:
                if a.name in given:
                    call[a.name] = values[a.name]
            elif a.name in given and not _at_default(values[a.name], a):
                raise VendorArgError(f"{self.name}: argument {a.name} not emulated")
        return self.impl(**call)


class OpPacket:
    """torch_npu.X (= torch.ops.npu.X, an OpOverloadPacket): callable as its default
    overload, with ``.default`` and named overloads (``.out``) carrying ``_schema``."""

    def __init__(self, name: str, overloads: dict[str, SchemaOp]):
        self.__name__ = name
        self._overloads = dict(overloads)
        for k, v in overloads.items():
            setattr(self, k, v)

    def overloads(self):
        return list(self._overloads)

    def __call__(self, *args, **kwargs):
        return self._overloads["default"](*args, **kwargs)
