"""POST /v1/chat/completions: the response and chunk shapes (OpenAI's chat.completion)."""
from __future__ import annotations

from .responses import Format, token_text, top_items


class ChatFormat(Format):
    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def _entry(self, tid: int, lp: float) -> dict:
        s = token_text(self.tok, tid)
        return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}

    def _logprobs(self, ids: list[int], lps: list[dict] | None):
        if lps is None:
            return None
        return {"content": [{**self._entry(t, lp[t]), "top_logprobs": [self._entry(i, v) for i, v in
                                                                       top_items(lp, self.k)]}
                            for t, lp in zip(ids, lps)]}

    def choice(self, index, text, ids, lps, reason, stop) -> dict:
        c = {"index": index, "message": {"role": "assistant", "content": text},
             "logprobs": self._logprobs(ids, lps), "finish_reason": reason, "stop_reason": stop}
        return self.with_ids(c, ids)

    def first_chunk(self, index: int) -> dict:
        """OpenAI opens each choice with the role."""
        return {**self.chunk_base(), "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}]}

    def chunk(self, d, want_lp: bool) -> dict:
        delta = {"content": d.text} if d.text or d.finish_reason is None else {}
        c = {"index": d.index, "delta": delta, "logprobs": self._logprobs(d.token_ids, d.logprobs) if want_lp else None,
             "finish_reason": d.finish_reason, "stop_reason": d.stop_reason}
        return {**self.chunk_base(), "choices": [self.with_ids(c, d.token_ids)]}
