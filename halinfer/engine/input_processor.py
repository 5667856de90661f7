"""The front end's input side: prompts and sampling parameters checked, text tokenized.

Everything that can be validated is validated before a request reaches the core,
with an error naming the field and what is accepted; nothing is coerced silently
(float or bool token ids, strings of digits are refused).
"""
from __future__ import annotations

import numbers
from dataclasses import fields, replace

from ..core.engine_core import EngineRequest
from ..core.sampling import MAX_LOGPROBS, SamplingParams


def token_ids_of(value, what: str = "prompt_token_ids") -> list[int]:
    """A list of int token ids from a list/tuple of ints (numpy ints too) or a 1-D integer
    array/tensor; anything else is a TypeError naming what was given."""
    if hasattr(value, "tolist") and hasattr(value, "ndim"):  # numpy array or torch tensor
        dtype = str(getattr(value, "dtype", ""))
        if value.ndim != 1 or "int" not in dtype:
            raise TypeError(f"{what} must be a 1-D integer array, got shape {tuple(value.shape)} of {dtype}")
        return [int(t) for t in value.tolist()]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a list of int token ids, got {type(value).__name__}")
    if all(type(t) is int for t in value):   # the common case, without an ABC check per token
        return list(value)
    for i, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"{what}[{i}] = {t!r} ({type(t).__name__}) is not an int token id")
    return [int(t) for t in value]


def sampling_params_of(value) -> SamplingParams:
    """A SamplingParams (None: the defaults; a dict: its fields by name), validated now:
    fields set after construction are checked here too."""
    if value is None:
        return SamplingParams()
    if isinstance(value, dict):
        known = {f.name for f in fields(SamplingParams)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown sampling parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return SamplingParams(**value)
    if not isinstance(value, SamplingParams):
        raise TypeError(f"sampling_params must be a SamplingParams or a dict of its fields, got {type(value).__name__}")
    value = replace(value)  # a private copy: the request must not change if the caller's object does
    value.validate()
    return value


class InputProcessor:
    def __init__(self, tokenizer, vocab_size: int, max_model_len: int, model_name: str, multimodal=None):
        self.tokenizer = tokenizer
        self.multimodal = multimodal   # engine/multimodal.MultimodalProcessor for models that take images
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.model_name = model_name

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError(f"{self.model_name!r} has no tokenizer; pass prompt_token_ids instead of text")
        return list(self.tokenizer.encode(text))

    def prompt(self, prompt) -> tuple[str | None, list[int]]:
        """(text or None, token ids) of a prompt: a string, a list of token ids, or a dict
        {"prompt": text} / {"prompt_token_ids": [...]} (vLLM's forms)."""
        if isinstance(prompt, str):
            return prompt, self.encode(prompt)
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), token_ids_of(prompt["prompt_token_ids"])
            if "prompt" in prompt and isinstance(prompt["prompt"], str):
                return prompt["prompt"], self.encode(prompt["prompt"])
            raise ValueError(f"a prompt dict needs 'prompt' (text) or 'prompt_token_ids'; got keys {sorted(prompt)}")
        return None, token_ids_of(prompt, "prompt")

    def request(self, request_id: str, prompt, params) -> tuple[str | None, EngineRequest]:
        text, ids = self.prompt(prompt)
        mm = None
        if isinstance(prompt, dict) and prompt.get("mm_inputs") is not None:
            mm = list(prompt["mm_inputs"])   # already processed (the server does it off the event loop)
        elif isinstance(prompt, dict) and prompt.get("multi_modal_data") is not None:
            ids, mm = self.multimodal_inputs(ids, prompt["multi_modal_data"], text)
        sp = sampling_params_of(params)
        self.check_params(sp)
        return text, EngineRequest(request_id, ids, sp, mm)

    def multimodal_inputs(self, ids: list[int], data, text: str | None = None) -> tuple[list[int], list]:
        """vLLM's multi_modal_data {"image": image or list}: placeholders expanded, images processed."""
        if not isinstance(data, dict):
            raise TypeError(f"multi_modal_data must be a dict like {{'image': image_or_list}}, got {type(data).__name__}")
        unknown = sorted(set(data) - {"image"})
        if unknown:
            raise ValueError(f"multi_modal_data holds {', '.join(map(repr, unknown))}; accepted: 'image'")
        if self.multimodal is None:
            raise ValueError(f"{self.model_name!r} is not a vision-language model; it takes no images")
        images = self.multimodal.load(data.get("image", []))
        if text is not None and self.multimodal.text_level:
            # Gemma 3 expands its placeholders in the text (the prompt's text wins over its ids)
            return self.multimodal.apply_text(text, images, self.encode)
        return self.multimodal.apply(ids, images)

    def check_params(self, sp: SamplingParams) -> None:
        """What only the model can tell: ids inside its vocabulary, stop strings need text."""
        V = self.vocab_size
        if sp.logprobs is not None and sp.logprobs > min(V, MAX_LOGPROBS):
            raise ValueError(f"SamplingParams.logprobs={sp.logprobs} is too large; accepted: 0..{min(V, MAX_LOGPROBS)}")
        bad = [t for t in sp.stop_token_ids if t >= V]
        if bad:
            raise ValueError(f"SamplingParams.stop_token_ids holds {bad[0]}, outside the vocabulary [0, {V})")
        if sp.stop and self.tokenizer is None:
            raise ValueError(f"SamplingParams.stop needs text, but {self.model_name!r} has no tokenizer; "
                             "use stop_token_ids")
