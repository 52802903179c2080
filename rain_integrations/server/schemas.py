"""The request bodies the server reads, in OpenAI's shape, with RAIN's own under ``rain``.

Fields OpenAI defines that RAIN cannot honour (tools, several choices,
log-probabilities, nucleus sampling, penalties) are read so that a request
using them gets a 400 naming the field, never a silent difference.

Types are strict, as JSON has them: ``"max_tokens": "12"`` is a 400, not 12,
and ``1`` is not ``true`` (an integer is still a valid number). A lax reading
would hide a client's bug; OpenAI's own API refuses these too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


class TextPart(BaseModel):
    """A part of a message's content; only text parts can be read by a text model."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # OpenAI's optional "name" and such

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Unsupported(BaseModel):
    """OpenAI fields read only to refuse them when set to anything but their neutral value."""

    n: int | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


class CommonRequest(Unsupported):
    """What the chat and the completions requests share."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=10.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    rain: dict[str, Any] = Field(
        default_factory=dict,
        description="RAIN settings: preset, template, and any RainConfig field.",
    )


class ChatRequest(CommonRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(CommonRequest):
    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
