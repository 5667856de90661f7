"""The user API: ``LLM`` (vLLM-style); the LMDeploy-style ``pipeline`` is in pipeline.py."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from .core.config import EngineConfig
from .core.engine import LLMEngine
from .core.outputs import RequestOutput
from .core.sampling import SamplingParams


class LLM:
    """Generate text with a Hugging Face model on any supported device.

    ``device``: "auto" (the highest-priority available backend), "cpu", "cuda",
    "cuda:1", "ascend"/"npu", "camb"/"mlu", "maca", ...; ``halinfer devices`` lists them.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str | torch.dtype = "auto",
                 max_model_len: int | None = None, max_num_seqs: int = 256, gpu_memory_utilization: float = 0.85,
                 block_size: int | None = None, enable_prefix_caching: bool = True, enforce_eager: bool = False,
                 kv_cache_dtype: str = "auto", quantization: str | None = None, tensor_parallel_size: int = 1,
                 seed: int = 0, max_num_batched_tokens: int | None = None, num_kv_blocks: int | None = None,
                 load_format: str = "auto", tokenizer=None, scheduling_policy: str = "separate",
                 async_scheduling: bool = True):
        cfg = EngineConfig(max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                           max_num_batched_tokens=max_num_batched_tokens,
                           gpu_memory_utilization=gpu_memory_utilization, block_size=block_size,
                           enable_prefix_caching=enable_prefix_caching, enforce_eager=enforce_eager,
                           kv_cache_dtype=kv_cache_dtype, num_kv_blocks=num_kv_blocks, seed=seed,
                           scheduling_policy=scheduling_policy, async_scheduling=async_scheduling)
        self.engine = LLMEngine(model, device=device, dtype=dtype, quantization=quantization,
                                tensor_parallel_size=tensor_parallel_size, load_format=load_format,
                                tokenizer=tokenizer, config=cfg)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def device(self) -> str:
        return str(self.engine.device)

    # -- batch generation ---------------------------------------------------------
    def generate(self, prompts: str | Sequence[str] | None = None,
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 prompt_token_ids: Sequence[int] | Sequence[Sequence[int]] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in the order given.

        All inputs are checked before any work starts; a bad one raises ValueError
        naming its index.
        """
        items = self._normalise(prompts, prompt_token_ids)
        params = self._params_list(sampling_params, len(items))
        rids = []
        try:
            for i, ((text, ids), p) in enumerate(zip(items, params)):
                try:
                    rids.append(self.engine.add_request(text, p, ids))
                except (ValueError, TypeError) as e:
                    raise type(e)(f"prompt {i}: {e}") from None
        except Exception:
            for r in rids:
                self.engine.abort(r)
            raise
        return self._run(rids, use_tqdm)

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
                eng.step()
                for out in eng.take_finished():
                    if out.request_id in pending:
                        pending.discard(out.request_id)
                        results[out.request_id] = out
                        if bar is not None:
                            bar.update(1)
                if pending and not eng.has_unfinished():
                    raise RuntimeError("engine stopped with requests unfinished")  # a bug, never expected
        finally:
            if bar is not None:
                bar.close()
        return [results[r] for r in rids]

    @staticmethod
    def _normalise(prompts, prompt_token_ids):
        if prompts is None and prompt_token_ids is None:
            raise ValueError("give prompts (text) or prompt_token_ids")
        if prompts is not None and prompt_token_ids is not None:
            raise ValueError("give prompts or prompt_token_ids, not both")
        if prompts is not None:
            if isinstance(prompts, str):
                prompts = [prompts]
            return [(p, None) for p in prompts]
        if prompt_token_ids and isinstance(prompt_token_ids[0], int):
            prompt_token_ids = [prompt_token_ids]
        return [(None, list(ids)) for ids in prompt_token_ids]

    @staticmethod
    def _params_list(sp, n: int) -> list[SamplingParams]:
        if sp is None:
            return [SamplingParams()] * n
        if isinstance(sp, SamplingParams):
            return [sp] * n
        sp = list(sp)
        if len(sp) != n:
            raise ValueError(f"got {len(sp)} SamplingParams for {n} prompts; give one, or one per prompt")
        return sp

    # -- chat ---------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict]) -> str:
        tok = self.engine.tokenizer
        if tok is None:
            raise ValueError("this model has no tokenizer, so no chat template")
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"the tokenizer of {self.engine.model_dir!r} has no chat template; use generate()")
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def chat(self, messages, sampling_params: SamplingParams | None = None, use_tqdm: bool = False):
        """One conversation (a list of {"role", "content"} dicts) or a list of them."""
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompts = [self.apply_chat_template(c) for c in convs]
        items = [self.engine.encode(p) for p in prompts]
        outs = self.generate(prompt_token_ids=items, sampling_params=sampling_params, use_tqdm=use_tqdm)
        for o, p in zip(outs, prompts):
            o.prompt = p
        return outs

    # -- streaming ------------------------------------------------------------------------
    def stream(self, prompt: str | None = None, sampling_params: SamplingParams | None = None,
               prompt_token_ids: list[int] | None = None) -> Iterator[str]:
        """Yield the first completion's text as it grows (one delta per step that adds text)."""
        eng = self.engine
        rid = eng.add_request(prompt, sampling_params, prompt_token_ids)
        try:
            while True:
                done = False
                for ev in eng.step():
                    if ev.request_id == rid and ev.index == 0:
                        if ev.delta:
                            yield ev.delta
                        done = ev.finished
                if done or rid not in eng.requests or eng.requests[rid].seqs[0].is_finished:
                    break
                if not eng.has_unfinished():
                    break
        finally:
            if rid in eng.requests and not eng.requests[rid].finished:
                eng.abort(rid)
            else:
                eng.requests.pop(rid, None)
