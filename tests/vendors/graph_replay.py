"""Every op call captured into a (emulated) device graph and replayed.

``GraphReplayOps(ops, api)`` wraps a backend's operator table: each call is
captured with its tensor inputs copied into static buffers that hold *other*
values, then
the real inputs are copied in and the graph replayed; the captured outputs are
returned.  Attention metadata is captured from a step of the same shape with
different lengths (each sequence sees only its new tokens), then updated in
place with the real step's and handed to ``GraphAPI.before_replay`` - exactly
what core/graph.py's CapturedDecodeRunner does per decode step.  So an op
whose result depends on anything frozen at capture (a host-side length list
not refreshed, a tensor built from host data) gives a wrong answer here.

``RecordingBuilder`` wraps a metadata builder so the harness can rebuild a
step's metadata with other lengths.
"""
from __future__ import annotations

import contextlib

import torch

from halinfer.core.attention import AttentionMetadata, LayerKV, StepInputs


class RecordingBuilder:
    """A MetadataBuilder that remembers which step each metadata came from."""

    def __init__(self, inner):
        self.inner = inner
        self.steps: dict[int, tuple[AttentionMetadata, StepInputs]] = {}

    def build(self, step: StepInputs):
        meta = self.inner.build(step)
        self.steps[id(meta)] = (meta, step)
        return meta

    def capture_variant(self, meta):
        """Metadata of the same shape whose sequences have no cached history."""
        m, step = self.steps[id(meta)]
        assert m is meta
        other = StepInputs(step.q_lens.copy(), step.q_lens.copy(), step.block_tables.copy(),
                           step.slot_mapping.copy(), step.block_size)
        cmeta = self.inner.build(other)
        # As CapturedDecodeRunner does: host-side bounds get the capacity, not this step's lengths.
        cmeta.max_seq_len = step.block_tables.shape[1] * step.block_size
        return cmeta


def _static(x, gen):
    """A buffer like x holding other values (so stale reads show up)."""
    if isinstance(x, LayerKV) or not isinstance(x, torch.Tensor):
        return x
    if x.is_floating_point():
        return (torch.randn(x.shape, generator=gen) * 3).to(x.device, x.dtype)
    return x.clone()   # indices / ids / int weights: other values could be out of range


def _copy_in(static, real):
    if isinstance(static, torch.Tensor) and static is not real:
        static.copy_(real)


class GraphReplayOps:
    def __init__(self, ops, api, builders: list[RecordingBuilder], capture_ctx=None):
        self._ops = ops
        self._api = api
        self._capture_ctx = capture_ctx   # () -> context manager active around each capture
        self._builders = builders
        self._gen = torch.Generator().manual_seed(1234)

    def _capture_meta(self, meta):
        for b in self._builders:
            if id(meta) in b.steps:
                return b.capture_variant(meta)
        raise AssertionError("metadata not built through the provider's RecordingBuilder")

    def __getattr__(self, name):
        fn = getattr(self._ops, name)
        # prepare_*: load-time re-layouts (Ops.prepare_gptq) run eagerly, before any capture, as
        # the engine runs them (finish_loading); they may sync the host
        if not callable(fn) or name.startswith("_") or name.startswith("prepare_"):
            return fn

        def replayed(*args, **kwargs):
            sargs = [_static(a, self._gen) for a in args]
            skw = {k: _static(v, self._gen) for k, v in kwargs.items()}
            meta = next((a for a in list(args) + list(kwargs.values()) if isinstance(a, AttentionMetadata)), None)
            cmeta = self._capture_meta(meta) if meta is not None else None
            sargs = [cmeta if a is meta and meta is not None else a for a in sargs]
            skw = {k: (cmeta if v is meta and meta is not None else v) for k, v in skw.items()}
            g = self._api.new_graph()
            with torch.inference_mode(), (self._capture_ctx() if self._capture_ctx else contextlib.nullcontext()):
                with self._api.capture(g, self._api.pool_handle()):
                    out = fn(*sargs, **skw)
            for s, r in zip(sargs, args):
                _copy_in(s, r)
            for k, v in kwargs.items():
                _copy_in(skw[k], v)
            if meta is not None:
                meta.copy_into(cmeta)
            self._api.before_replay(g, cmeta)
            g.replay()
            return out

        return replayed
