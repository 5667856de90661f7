"""Incremental detokenization: turn each new output token into the text it adds.

Decoding a single token in isolation is wrong for byte-level BPE (a character can
span tokens) and for SentencePiece (leading spaces depend on the neighbour).  So
we decode a short window ending at the new token and subtract the decoding of the
same window without it; while the window ends in an incomplete character
(U+FFFD), we wait for more tokens; ``flush`` emits what is still held back when the
completion ends (a trailing U+FFFD is then real output).

``seq`` is any object with token_ids (prompt + output), num_prompt, output_token_ids,
text, prefix_offset and read_offset: the front end's per-completion state.
"""
from __future__ import annotations


# How many tokens before the new ones give context to the decoding.
_CONTEXT = 6


def start(seq) -> None:
    """Set a sequence's offsets so that the prompt contributes context but no text."""
    seq.read_offset = seq.num_prompt
    seq.prefix_offset = max(0, seq.num_prompt - _CONTEXT)
    seq.text = ""


def step(tokenizer, seq, skip_special_tokens: bool = True) -> str:
    """Append the text of tokens past seq.read_offset to seq.text; return the new text."""
    if tokenizer is None:
        return ""
    ids = seq.token_ids
    prefix = tokenizer.decode(ids[seq.prefix_offset:seq.read_offset], skip_special_tokens=skip_special_tokens)
    full = tokenizer.decode(ids[seq.prefix_offset:], skip_special_tokens=skip_special_tokens)
    if full.endswith("\ufffd") or len(full) < len(prefix) or not full.startswith(prefix):
        if not full.startswith(prefix) and not full.endswith("\ufffd"):
            # Normalisation changed the shared prefix; fall back to a whole decode.
            whole = tokenizer.decode(seq.output_token_ids, skip_special_tokens=skip_special_tokens)
            new = whole[len(seq.text):] if whole.startswith(seq.text) else ""
            seq.text = whole
            seq.prefix_offset = max(0, len(ids) - _CONTEXT)
            seq.read_offset = len(ids)
            return new
        return ""
    new = full[len(prefix):]
    seq.text += new
    seq.prefix_offset = seq.read_offset
    seq.read_offset = len(ids)
    return new


def flush(tokenizer, seq, skip_special_tokens: bool = True) -> str:
    """At the end of a completion: the text still held back (an incomplete character)."""
    if tokenizer is None or seq.read_offset >= len(seq.token_ids):
        return ""
    whole = tokenizer.decode(seq.output_token_ids, skip_special_tokens=skip_special_tokens)
    if not whole.startswith(seq.text) or len(whole) <= len(seq.text):
        return ""
    new = whole[len(seq.text):]
    seq.text = whole
    seq.read_offset = len(seq.token_ids)
    return new
