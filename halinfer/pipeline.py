"""LMDeploy-style ``pipeline``: ``pipe(["hi", "hello"])`` -> responses with ``.text``.

As in LMDeploy, a plain string prompt is wrapped in the model's chat template (one
user turn) unless ``chat_template=False``; a list of {"role", "content"} dicts is a
conversation.  The default ``max_tokens`` is a useful reply length (512), not
SamplingParams' 16, which is vLLM's API default.
"""
from __future__ import annotations

import sys
import types

from dataclasses import replace

from .core.sampling import SamplingParams
from .llm import LLM

DEFAULT_MAX_TOKENS = 512


class Pipeline:
    def __init__(self, llm: LLM, chat_template: bool = True):
        self.llm = llm
        tok = llm.tokenizer
        # A model without a template (a base model) gets its prompts as given.
        self.chat_template = chat_template and tok is not None and bool(getattr(tok, "chat_template", None))

    def _params(self, gen_config: SamplingParams | None) -> SamplingParams:
        return gen_config if gen_config is not None else SamplingParams(max_tokens=DEFAULT_MAX_TOKENS)

    def _ids(self, prompt) -> list[int]:
        if isinstance(prompt, list):  # a conversation
            return self.llm.engine.encode(self.llm.apply_chat_template(prompt))
        if self.chat_template:
            return self.llm.engine.encode(self.llm.apply_chat_template([{"role": "user", "content": prompt}]))
        return self.llm.engine.encode(prompt)

    def __call__(self, prompts, gen_config: SamplingParams | None = None, use_tqdm: bool = False):
        single = isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict))
        items = [prompts] if single else list(prompts)
        outs = self.llm.generate(prompt_token_ids=[self._ids(p) for p in items],
                                 sampling_params=self._params(gen_config), use_tqdm=use_tqdm)
        return outs[0] if single else outs

    def stream_infer(self, prompt, gen_config: SamplingParams | None = None):
        yield from self.llm.stream(None, self._params(gen_config), prompt_token_ids=self._ids(prompt))

def pipeline(model: str, device: str = "auto", chat_template: bool = True, **kw) -> Pipeline:
    """``chat_template=False``: send string prompts as they are (no chat template)."""
    return Pipeline(LLM(model, device=device, **kw), chat_template=chat_template)


class _CallableModule(types.ModuleType):
    """Importing this submodule makes ``halinfer.pipeline`` the module (Python sets the
    package attribute), which would break ``halinfer.pipeline(model)``; calling the
    module calls the function, so both spellings keep working."""

    def __call__(self, *args, **kwargs) -> Pipeline:
        return pipeline(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
