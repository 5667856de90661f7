"""The tokenizer a GGUF file describes, built from its vocabulary, merges, token
types, special ids and chat template (a GGUF carries no tokenizer.json).

Byte-level BPE vocabularies (``tokenizer.ggml.model == "gpt2"``: Llama 3, Qwen,
SmolLM, ...) are built here with the ``tokenizers`` library. SentencePiece
vocabularies (``"llama"``: Llama 2, Gemma) need merges recovered from scores,
which transformers' GGUF tokenizer already does; for those we hand over to it.
"""
from __future__ import annotations

import os
from functools import lru_cache

# The pre-tokenizer split each llama.cpp "pre" name stands for (the regexes the
# vocabularies were trained with). Names not listed use GPT-2's own split.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_SPLITS = {"llama3": _LLAMA3, "llama-v3": _LLAMA3, "llama-bpe": _LLAMA3, "smaug-bpe": _LLAMA3,
              "dbrx": _LLAMA3, "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tokenizer(md: dict, path: str):
    kind = md.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in md:
        return None
    if kind == "gpt2":
        return _byte_level(md)
    if kind in ("llama", "t5"):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                             gguf_file=os.path.basename(path))
    raise ValueError(f"{path!r}: GGUF tokenizer model {kind!r} is not supported; supported: gpt2 "
                     "(byte-level BPE), llama (SentencePiece), t5")


def _byte_level(md: dict):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alpha = _byte_alphabet()
    letters = set(alpha.values())
    tokens = list(md["tokenizer.ggml.tokens"])
    # A few files store a token in raw text rather than the byte alphabet: respell it.
    spelled = [t if set(t) <= letters else "".join(alpha[b] for b in t.encode("utf-8")) for t in tokens]
    vocab = {t: i for i, t in enumerate(spelled)}
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    split = PRE_SPLITS.get(md.get("tokenizer.ggml.pre"))
    if split:
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                             use_regex=False)])
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    types = list(md.get("tokenizer.ggml.token_type") or [])
    # Control tokens stay whole and are special; a control token outside the byte
    # alphabet is a mislabel in the file and would grow the vocabulary, so skip it.
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
                           if k == CONTROL and set(t) <= letters])
    tk.add_tokens([AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types)
                   if k == USER_DEFINED and t in vocab])

    def tok(key):
        i = md.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos = tok("bos")
    if md.get("tokenizer.ggml.add_bos_token") and bos is not None:
        tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                          special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=tok("eos"),
                                   unk_token=tok("unknown"), pad_token=tok("padding"),
                                   chat_template=md.get("tokenizer.chat_template"))
