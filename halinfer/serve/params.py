"""From a request body to what AsyncLLM takes: token-id prompts and SamplingParams.

Everything is checked here, before any request reaches the engine, so a bad field of a
multi-prompt request is a 400 with nothing started.
"""
from __future__ import annotations

from ..core.sampling import MAX_LOGPROBS
from ..engine.input_processor import sampling_params_of
from .errors import APIError, bad_value, shown
from .protocol import ChatCompletionRequest, CompletionRequest, _Sampling

# Request field -> SamplingParams field, when the request gives it (None: engine default).
_SAMPLING_FIELDS = ("n", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                    "repetition_penalty", "seed", "stop", "stop_token_ids", "ignore_eos", "min_tokens",
                    "skip_special_tokens")


def refuse_unsupported(req: _Sampling, **extra) -> None:
    if req.logit_bias:
        raise APIError(400, "logit_bias is not supported", param="logit_bias")
    for name, bad in extra.items():
        if bad:
            raise APIError(400, f"{name} is not supported by this server", param=name)


def sampling_params(engine, req: _Sampling, max_tokens, logprobs, rename: dict | None = None):
    """SamplingParams of req; a bad value is a 400 naming the API field and the accepted range."""
    d = {f: getattr(req, f) for f in _SAMPLING_FIELDS if getattr(req, f) is not None}
    d["max_tokens"] = max_tokens
    d["logprobs"] = logprobs
    try:
        sp = sampling_params_of(d)
        engine.inputs.check_params(sp)
    except (ValueError, TypeError) as e:
        raise bad_value(e, rename) from None
    return sp


def check_prompt(engine, ids: list[int], what: str) -> None:
    if not ids:
        raise APIError(400, f"{what} is empty (0 tokens); at least one token is needed", param=what)
    limit = engine.max_model_len
    if len(ids) >= limit:
        raise APIError(400, f"{what} has {len(ids)} tokens; the context (max_model_len) is {limit}, "
                            f"so at most {limit - 1} prompt tokens are accepted", param=what)
    check_vocab(engine, ids, what)


def check_vocab(engine, ids: list[int], what: str) -> None:
    vocab = engine.core.vocab_size
    bad = next((t for t in ids if not 0 <= t < vocab), None)
    if bad is not None:
        raise APIError(400, f"{what} holds token id {bad}, outside the vocabulary [0, {vocab})", param=what)


def encode(engine, text: str, what: str) -> list[int]:
    try:
        return engine.inputs.encode(text)
    except ValueError as e:
        raise APIError(400, str(e), param=what) from None


def completion_prompts(engine, req: CompletionRequest) -> list[tuple[str | None, list[int]]]:
    """(text or None, token ids) per prompt of a /v1/completions body."""
    p = req.prompt
    if isinstance(p, str):
        items = [(p, None)]
    elif not p:
        raise APIError(400, "prompt is an empty list; give a string, a list of strings, or token ids",
                       param="prompt")
    elif isinstance(p[0], str):
        items = [(s, None) for s in p]
    elif isinstance(p[0], int):
        items = [(None, list(p))]
    else:
        items = [(None, list(ids)) for ids in p]
    out = []
    for i, (text, ids) in enumerate(items):
        what = "prompt" if len(items) == 1 else f"prompt[{i}]"
        if ids is None:
            ids = encode(engine, text, what)
        check_prompt(engine, ids, what)
        out.append((text, ids))
    return out


def completion_params(engine, req: CompletionRequest):
    refuse_unsupported(req, echo=req.echo, suffix=req.suffix)
    if req.best_of is not None and req.best_of != req.n:
        raise APIError(400, f"best_of={shown(req.best_of)} is not supported; accepted: equal to n ({req.n}) "
                            "or left out", param="best_of")
    return sampling_params(engine, req, req.max_tokens, req.logprobs)


def chat_messages(req: ChatCompletionRequest, images: bool = True) -> list[dict]:
    """Messages as the chat template takes them: a content-part list of text parts becomes
    their text, one per line; a list holding image_url parts stays a list of part dicts
    (chat_images turns it into text with the model's placeholders)."""
    if not req.messages:
        raise APIError(400, "messages is empty; give at least one message", param="messages")
    out = []
    for i, m in enumerate(req.messages):
        content = m.content
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if part.type == "image_url" and images:
                    url = getattr(part, "image_url", None)
                    if url is None:
                        raise APIError(400, f"messages[{i}].content[{j}]: an image_url part needs its "
                                            "'image_url' field ({'url': ...})", param="messages")
                    parts.append({"type": "image_url", "image_url": {"url": url if isinstance(url, str) else url.url}})
                elif part.type == "text":
                    parts.append({"type": "text", "text": part.text})
                else:
                    accepted = "'text' and 'image_url'" if images else "only 'text'"
                    raise APIError(400, f"messages[{i}].content[{j}] has type {shown(part.type)}; "
                                        f"{accepted} parts are accepted", param="messages")
            if all(p["type"] == "text" for p in parts):
                content = "\n".join(p["text"] for p in parts)
            else:
                content = parts
        msg = {"role": m.role, "content": content if content is not None else ""}
        if m.name is not None:
            msg["name"] = m.name
        out.append(msg)
    return out


def chat_images(engine, messages: list[dict], local_root: str | None) -> tuple[list[dict], list]:
    """(messages with string contents, the images loaded in order): each image part becomes
    the model's placeholder text, as LLM.chat writes it.  A bad or refused image, or more of
    them than the model takes, is a 400 naming where it stands and why.  Blocking (files,
    http fetches, decoding): the app runs it in a worker thread."""
    from ..engine.multimodal import chat_parts

    if not any(isinstance(m.get("content"), list) for m in messages):
        return messages, []
    mm = engine.inputs.multimodal
    if mm is None:
        raise APIError(400, f"messages hold image parts, but {engine.inputs.model_name!r} takes no images",
                       param="messages")
    n = sum(p["type"] == "image_url" for m in messages if isinstance(m.get("content"), list) for p in m["content"])
    if n > mm.max_images:
        raise APIError(400, f"messages hold {n} images; this model takes at most {mm.max_images} per request",
                       param="messages")
    try:
        return chat_parts(messages, mm.family.prompt_text, mm.allowed_domains, local_root)
    except (ValueError, TypeError) as e:
        msg = str(e)
        if msg.startswith("message "):   # "message i, part j: why" -> the request's own field names
            head, _, why = msg.partition(": ")
            mi, _, pj = head.partition(", part ")
            msg = f"messages[{mi[len('message '):]}].content[{pj}]: {why}"
        raise APIError(400, f"bad image: {msg[:400]}", param="messages") from None


def chat_prompt(engine, messages: list[dict], add_generation_prompt: bool = True) -> tuple[str, list[int]]:
    tok = engine.tokenizer
    if tok is None or not getattr(tok, "chat_template", None):
        raise APIError(400, "this model has no chat template; use /v1/completions", param="messages")
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - a template error is the request's fault (roles, order)
        raise APIError(400, f"the chat template refused these messages: {str(e)[:200]}", param="messages") from None
    return text, encode(engine, text, "messages")


def chat_params(engine, req: ChatCompletionRequest):
    refuse_unsupported(req, tools=req.tools)
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise APIError(400, "give max_completion_tokens or max_tokens, not both", param="max_completion_tokens")
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    rename = {"max_tokens": "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens",
              "logprobs": "top_logprobs"}
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= MAX_LOGPROBS:
        raise APIError(400, f"top_logprobs={shown(req.top_logprobs)} is invalid; accepted: an integer in "
                            f"[0, {MAX_LOGPROBS}]", param="top_logprobs")
    lp = (req.top_logprobs or 0) if req.logprobs else None
    return sampling_params(engine, req, max_tokens, lp, rename)
