"""Request bodies of the OpenAI API, as pydantic v2 models.

Only types are checked here; ranges are SamplingParams' business (one place says what is
accepted).  Unknown fields are ignored, as OpenAI-compatible servers do, so clients that
send newer fields still work.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, StrictInt


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """Fields both generation endpoints take (vLLM's extensions included)."""

    model: Optional[str] = None
    n: int = 1
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    stop_token_ids: Optional[list[int]] = None
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    return_token_ids: bool = False  # extension (as vLLM's): each choice carries its token ids
    # Accepted by OpenAI but not implemented here: refused with a 400 rather than ignored.
    logit_bias: Optional[dict[str, float]] = None


# A prompt: text, a list of texts, token ids, or a list of token-id lists.  StrictInt
# keeps "12" and 1.0 from turning into token ids.
Prompt = Union[str, list[str], list[StrictInt], list[list[StrictInt]]]


class CompletionRequest(_Sampling):
    prompt: Prompt
    max_tokens: Optional[int] = 16
    logprobs: Optional[int] = None
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageURL(_Body):
    url: str
    detail: Optional[str] = None   # OpenAI's; accepted and ignored


class ImageURLPart(_Body):
    type: Literal["image_url"]
    image_url: Union[ImageURL, str]


class OtherPart(_Body):
    type: str


class ChatMessage(_Body):
    role: str
    content: Optional[Union[str, list[Union[TextPart, ImageURLPart, OtherPart]]]] = None
    name: Optional[str] = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = None
    add_generation_prompt: bool = True
    tools: Optional[list] = None


class TokenizeRequest(_Body):
    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None
    add_generation_prompt: bool = True


class DetokenizeRequest(_Body):
    model: Optional[str] = None
    tokens: list[StrictInt]
