"""Multimodal inputs as the core carries them: where an image's tokens sit in the prompt,
a hash of its content, and the encoder's inputs (opaque to the core).

The front end (engine/multimodal.py) builds these; the scheduler keeps them on the
Sequence and hands them to the worker in a SlotInit; the prefix cache keys blocks that
hold image tokens by the image hash (block_extra); the worker's encoder cache
(encoder_cache.py) runs the encoder once per image and places the features.

M-RoPE (Qwen2-VL family): an image's tokens take 3-D positions ``start + rel_positions``,
where ``start`` is the position the image's first token would have as text; the text after
it continues from the image's largest position + 1.  With no rel_positions a token's
model position is its index in the sequence, as for text.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MMInput:
    offset: int                  # index in the prompt of the image's first feature token
    length: int                  # feature tokens (one encoder output row each)
    hash: str                    # content hash: prefix-cache and encoder-cache key
    data: dict                   # encoder inputs (CPU tensors), read only by the model
    rel_positions: np.ndarray | None = None   # int64 [3, length]: M-RoPE offsets from the image's start
    # Gemma 3: the image's tokens attend to each other both ways, so a prefill chunk must
    # hold all of them (the scheduler never ends a chunk inside such an image)
    bidirectional: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def pos_advance(self) -> int:
        """How far the positions of the text after this image run ahead of its token index."""
        if self.rel_positions is None:
            return 0
        return int(self.rel_positions.max()) + 1 - self.length


def block_extra(mm_inputs: list[MMInput], b: int, block_size: int) -> tuple:
    """What block b's prefix-cache key adds to its token ids: (hash, offset of the image's
    first token relative to the block) for each image with tokens in the block."""
    lo, hi = b * block_size, (b + 1) * block_size
    return tuple((m.hash, m.offset - lo) for m in mm_inputs if m.offset < hi and m.end > lo)


def whole_image_cut(mm_inputs: list[MMInput], start: int, n: int) -> int:
    """The largest n' <= n such that the chunk [start, start + n') does not end inside a
    bidirectional image (0 when the chunk would have to stop before start)."""
    end = start + n
    for m in mm_inputs:
        if m.bidirectional and m.offset < end < m.end:
            end = m.offset
    return max(0, end - start)


def total_advance(mm_inputs: list[MMInput]) -> int:
    return sum(m.pos_advance for m in mm_inputs)


def model_positions(mm_inputs: list[MMInput], raw: np.ndarray) -> np.ndarray:
    """int64 [3, n] M-RoPE positions of the tokens at sequence indices ``raw`` (sorted)."""
    out = np.broadcast_to(raw, (3, len(raw))).copy()
    shift = np.zeros(len(raw), dtype=np.int64)
    image = np.zeros(len(raw), dtype=bool)
    for m in sorted(mm_inputs, key=lambda m: m.offset):
        if m.rel_positions is None:
            continue
        inside = (raw >= m.offset) & (raw < m.end)
        if inside.any():
            start = m.offset + shift[inside][0]     # the image's first position (text numbering)
            out[:, inside] = start + m.rel_positions[:, raw[inside] - m.offset]
        image |= inside
        shift[raw >= m.end] += m.pos_advance
    out[:, ~image] += shift[~image]
    return out
