"""The user API: ``LLM`` (vLLM-style); the LMDeploy-style ``pipeline`` is in pipeline.py."""
from __future__ import annotations

from dataclasses import fields
from typing import Iterator


from .core.config import EngineConfig
from .core.sampling import SamplingParams
from .engine.llm_engine import LLMEngine
from .engine.outputs import RequestOutput


class LLM:
    """Generate text with a Hugging Face model on any supported device.

    ``device``: "auto" (the highest-priority available backend), "cpu", "cuda",
    "cuda:1", "ascend"/"npu", "camb"/"mlu", "maca", ...; ``halinfer devices`` lists them.
    ``executor``: "inproc" (the worker in this process) or "mp" (one worker process per rank).
    """

    def __init__(self, model: str, **kw):
        """Keyword arguments: device="auto", dtype="auto", max_model_len=None, max_num_seqs=None,
        gpu_memory_utilization=0.85, block_size=None, enable_prefix_caching=True,
        enforce_eager=False, kv_cache_dtype="auto", quantization=None, tensor_parallel_size=1,
        seed=0, max_num_batched_tokens=None, num_kv_blocks=None, load_format="auto",
        tokenizer=None, scheduling_policy="separate", async_scheduling=True, executor="inproc",
        enable_expert_parallel=False.  tensor_parallel_size > 1 runs one worker process per rank
        (README "Multi-device"); allowed_media_domains=() (hosts whose http(s) image URLs may be fetched)."""
        eng_kw, cfg = engine_kwargs(**kw)
        self.engine = LLMEngine(model, config=cfg, **eng_kw)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def device(self) -> str:
        return str(self.engine.device)

    def shutdown(self) -> None:
        """Stop the workers (needed only with executor="mp"; also done at exit)."""
        self.engine.shutdown()

    # -- batch generation ---------------------------------------------------------
    def generate(self, prompts=None, sampling_params=None, prompt_token_ids=None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in the order given.

        ``prompts``: a string, a list of strings, or vLLM-style dicts ({"prompt": ...} or
        {"prompt_token_ids": [...]}); or give ``prompt_token_ids`` (a list of ints, or a
        list of such lists).  ``sampling_params``: one SamplingParams (or dict of its
        fields) for all, or one per prompt.  All inputs are checked before any work
        starts; a bad one raises naming its index.  Whatever ends the call (an error,
        Ctrl-C) aborts the requests it submitted.
        """
        items = self._normalise(prompts, prompt_token_ids)
        params = self._params_list(sampling_params, len(items))
        eng = self.engine
        rids: list[str] = []
        try:
            for i, (item, p) in enumerate(zip(items, params)):
                try:
                    rids.append(eng.add_request(item, p))
                except (ValueError, TypeError) as e:
                    raise type(e)(f"prompt {i}: {e}") from None
            return self._run(rids, use_tqdm)
        finally:
            for r in rids:  # on success they are gone already; on any exit nothing stays behind
                if r in eng.outputs.requests:
                    eng.abort(r)

    def _run(self, rids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        eng = self.engine
        pending = set(rids)
        results: dict[str, RequestOutput] = {}
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(rids), desc="Generating", unit="req", leave=False)
        try:
            while pending:
                changed = eng.step()
                for r in list(pending):
                    if (r in changed or not eng.has_unfinished()) and eng.is_finished(r):
                        results[r] = eng.take(r)
                        pending.discard(r)
                        if bar is not None:
                            bar.update(1)
                if pending and not eng.has_unfinished():
                    raise RuntimeError("engine stopped with requests unfinished")  # a bug, never expected
        finally:
            if bar is not None:
                bar.close()
        return [results[r] for r in rids]

    @staticmethod
    def _normalise(prompts, prompt_token_ids) -> list:
        if prompts is None and prompt_token_ids is None:
            raise ValueError("give prompts (text) or prompt_token_ids")
        if prompts is not None and prompt_token_ids is not None:
            raise ValueError("give prompts or prompt_token_ids, not both")
        if prompts is not None:
            if isinstance(prompts, (str, dict)):
                return [prompts]
            return list(prompts)
        if hasattr(prompt_token_ids, "ndim"):  # an array or tensor: 1-D is one prompt, 2-D a batch
            return [{"prompt_token_ids": prompt_token_ids}] if prompt_token_ids.ndim == 1 else \
                [{"prompt_token_ids": row} for row in prompt_token_ids]
        if not isinstance(prompt_token_ids, (list, tuple)):
            raise TypeError(f"prompt_token_ids must be a list of ints or a list of such lists, "
                            f"got {type(prompt_token_ids).__name__}")
        if prompt_token_ids and not isinstance(prompt_token_ids[0], (list, tuple)) \
                and getattr(prompt_token_ids[0], "ndim", 0) == 0:
            prompt_token_ids = [prompt_token_ids]
        return [{"prompt_token_ids": ids} for ids in prompt_token_ids]

    @staticmethod
    def _params_list(sp, n: int) -> list:
        if sp is None or isinstance(sp, (SamplingParams, dict)):
            return [sp] * n
        if not isinstance(sp, (list, tuple)):
            raise TypeError(f"sampling_params must be a SamplingParams, a dict of its fields, or a list of them; "
                            f"got {type(sp).__name__}")
        if len(sp) != n:
            raise ValueError(f"got {len(sp)} SamplingParams for {n} prompts; give one, or one per prompt")
        for i, p in enumerate(sp):
            if p is None:
                raise TypeError(f"sampling_params[{i}] is None; give a SamplingParams for every prompt")
        return list(sp)

    # -- chat ---------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict]) -> str:
        tok = self.engine.tokenizer
        if tok is None:
            raise ValueError("this model has no tokenizer, so no chat template")
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"the tokenizer of {self.engine.model_dir!r} has no chat template; use generate()")
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def chat(self, messages, sampling_params: SamplingParams | None = None, use_tqdm: bool = False):
        """One conversation (a list of {"role", "content"} dicts), a list of them, or a plain
        string (one user turn).  A content may be a list of OpenAI parts: text, image_url
        (data: URL, file path or file:// URL) and image (a PIL image)."""
        from .engine.multimodal import chat_parts

        mm = self.engine.inputs.multimodal
        items = []
        for ci, conv in enumerate(self._conversations(messages)):
            try:
                conv, images = chat_parts(conv, mm.family.prompt_text if mm else None,
                                          mm.allowed_domains if mm else ())
            except (TypeError, ValueError) as e:
                raise type(e)(f"conversation {ci}: {e}") from None
            p = self.apply_chat_template(conv)
            item = {"prompt": p, "prompt_token_ids": self.engine.encode(p)}
            if images:
                item["multi_modal_data"] = {"image": images}
            items.append(item)
        return self.generate(items, sampling_params=sampling_params, use_tqdm=use_tqdm)

    @staticmethod
    def _conversations(messages) -> list[list[dict]]:
        if isinstance(messages, str):
            return [[{"role": "user", "content": messages}]]
        if not isinstance(messages, (list, tuple)) or not messages:
            raise TypeError("chat() takes a string, a list of {'role', 'content'} dicts, or a list of such lists; "
                            f"got {type(messages).__name__ if messages else 'an empty list'}")
        convs = [messages] if isinstance(messages[0], dict) else list(messages)
        for ci, conv in enumerate(convs):
            if not isinstance(conv, (list, tuple)) or not conv:
                raise TypeError(f"conversation {ci} must be a non-empty list of message dicts")
            for mi, m in enumerate(conv):
                if not isinstance(m, dict) or "role" not in m or "content" not in m:
                    raise TypeError(f"conversation {ci}, message {mi}: expected a dict with 'role' and 'content', "
                                    f"got {m!r:.80}")
        return convs

    # -- streaming ------------------------------------------------------------------------
    def stream(self, prompt=None, sampling_params: SamplingParams | None = None,
               prompt_token_ids: list[int] | None = None) -> Iterator[str]:
        """Yield the first completion's text as it grows (one delta per step that adds text).

        A request that fails raises RuntimeError with its error; closing the generator
        early aborts the request."""
        eng = self.engine
        rid = eng.add_request(prompt, sampling_params, prompt_token_ids)
        try:
            while True:
                eng.step()
                delta = eng.take_delta(rid)
                if delta:
                    yield delta
                if eng.is_finished(rid):
                    out = eng.take(rid)
                    first = out.outputs[0]
                    if first.finish_reason == "error":
                        raise RuntimeError(f"request {rid} failed: {first.error}")
                    return
        finally:
            if rid in eng.outputs.requests:
                eng.abort(rid)


_ENGINE_ARGS = ("device", "dtype", "quantization", "tensor_parallel_size", "load_format", "tokenizer", "executor")


def engine_kwargs(**kw) -> tuple[dict, EngineConfig]:
    """Split LLM/AsyncLLM keyword arguments into the engine builder's and EngineConfig's,
    naming any unknown one."""
    eng = {k: kw.pop(k) for k in _ENGINE_ARGS if k in kw}
    known = {f.name for f in fields(EngineConfig)} - {"extra"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise TypeError(f"unknown engine argument(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(known | set(_ENGINE_ARGS)))}")
    return eng, EngineConfig(**kw)
