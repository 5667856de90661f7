"""Calibration text: the built-in one (texts/calibration.md, written for halinfer, no
dataset copied), a user's text file, and cutting a text into token samples.

texts/heldout.md is a second text of the same kinds, never used for calibration: the
accuracy benchmark measures perplexity on it.
"""
from __future__ import annotations

import os

import torch

_TEXTS = os.path.join(os.path.dirname(__file__), "texts")


def builtin_text(name: str = "calibration") -> str:
    """``calibration`` or ``heldout``."""
    path = os.path.join(_TEXTS, f"{name}.md")
    if not os.path.isfile(path):
        raise ValueError(f"no built-in text {name!r}; there are: calibration, heldout")
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_text(path: str | None) -> str:
    """The user's calibration file (UTF-8 text), or the built-in text when path is None."""
    if path is None:
        return builtin_text("calibration")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration file {path!r} does not exist (expected a UTF-8 text file)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"calibration file {path!r} is empty")
    return text


def make_samples(tokenizer, text: str, num_samples: int, seq_len: int) -> torch.Tensor:
    """int64 [num_samples, seq_len]: windows of the tokenized text.

    Windows are spread evenly over the text; when the text holds fewer than
    num_samples * seq_len tokens they overlap (and a text shorter than one window is
    repeated), so any text yields the requested shape.
    """
    if num_samples < 1 or seq_len < 2:
        raise ValueError(f"num_samples must be >= 1 and seq_len >= 2 (got {num_samples}, {seq_len})")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("the calibration text tokenizes to no tokens")
    while len(ids) < seq_len:
        ids = ids + ids
    ids = torch.tensor(ids, dtype=torch.long)
    last = len(ids) - seq_len
    starts = torch.linspace(0, last, num_samples).round().long() if num_samples > 1 else torch.zeros(1).long()
    return torch.stack([ids[s:s + seq_len] for s in starts.tolist()])
