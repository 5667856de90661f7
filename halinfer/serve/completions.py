"""POST /v1/completions: the response and chunk shapes (OpenAI's text_completion)."""
from __future__ import annotations

from .responses import Format, token_text, top_items


class CompletionFormat(Format):
    object, chunk_object = "text_completion", "text_completion"

    def _logprobs(self, ids: list[int], lps: list[dict] | None):
        if lps is None:
            return None
        tokens = [token_text(self.tok, t) for t in ids]
        offsets, pos = [], 0  # offsets within this piece of text
        for s in tokens:
            offsets.append(pos)
            pos += len(s)
        return {"tokens": tokens, "token_logprobs": [lp[t] for t, lp in zip(ids, lps)],
                "top_logprobs": [self._top(lp) for lp in lps], "text_offset": offsets}

    def _top(self, lp: dict) -> dict:
        """{token text: logprob}, most likely first; ids that decode alike keep the larger."""
        top: dict = {}
        for t, v in top_items(lp, self.k):
            top.setdefault(token_text(self.tok, t), v)
        return top

    def choice(self, index, text, ids, lps, reason, stop) -> dict:
        c = {"index": index, "text": text, "logprobs": self._logprobs(ids, lps), "finish_reason": reason,
             "stop_reason": stop}
        return self.with_ids(c, ids)

    def chunk(self, d, want_lp: bool) -> dict:
        c = {"index": d.index, "text": d.text, "logprobs": self._logprobs(d.token_ids, d.logprobs) if want_lp else None,
             "finish_reason": d.finish_reason, "stop_reason": d.stop_reason}
        return {**self.chunk_base(), "choices": [self.with_ids(c, d.token_ids)]}
