"""Replies in OpenAI's shapes: ``chat.completion``, ``text_completion`` and their chunks.

RAIN's own report (search statistics, warnings, RAIN's finish reason) rides
along as an extra ``rain`` object, which OpenAI clients keep but do not need.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from rain_search.result import RainResult, StepStats

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "budget": "length"}
"""RAIN's finish reasons as OpenAI's; ``budget`` (a timeout) reads as ``length``."""


def usage(result: RainResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def rain_report(result: RainResult) -> dict[str, Any]:
    """The search statistics, RAIN's own finish reason, the committed sets and warnings."""
    return {**result.stats, "token_sets": result.token_sets, "warnings": list(result.warnings)}


def step_report(step: StepStats) -> dict[str, Any]:
    """What a streamed chunk says about the search that committed it."""
    return {
        "step": step.index,
        "iterations": step.iterations,
        "visits": step.visits,
        "value": step.value,
        "early_stopped": step.early_stopped,
    }


def sse(data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
HEARTBEAT = ": keep-alive\n\n"
"""An SSE comment: clients ignore it; writing it shows whether the client is still there."""


@dataclass
class Reply:
    """The id, time and model every object of one reply carries."""

    chat: bool
    model: str
    id: str = field(default="")
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = self.id or f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"

    @property
    def kind(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _choice(self, text: str | None, finish: str | None, *, delta: bool) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        if delta:
            return {
                "index": 0,
                "delta": {} if text is None else {"content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}

    def whole(self, result: RainResult) -> dict[str, Any]:
        """The complete reply to a non-streaming request."""
        return {
            **self._head(self.kind),
            "choices": [self._choice(result.text, FINISH[result.finish_reason], delta=False)],
            "usage": usage(result),
            "rain": rain_report(result),
        }

    def chunk_kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def opening(self) -> dict[str, Any] | None:
        """A chat stream opens with the assistant's role and no text."""
        if not self.chat:
            return None
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        return {**self._head(self.chunk_kind()), "choices": [choice]}

    def step(self, step: StepStats) -> dict[str, Any]:
        """One committed token set."""
        return {
            **self._head(self.chunk_kind()),
            "choices": [self._choice(step.text, None, delta=True)],
            "rain": step_report(step),
        }

    def closing(self, result: RainResult) -> dict[str, Any]:
        """The last choice chunk: the finish reason and RAIN's report, no text."""
        choice = self._choice(None, FINISH[result.finish_reason], delta=True)
        return {**self._head(self.chunk_kind()), "choices": [choice], "rain": rain_report(result)}

    def usage_chunk(self, result: RainResult) -> dict[str, Any]:
        """Asked for with ``stream_options.include_usage``: no choices, the token counts."""
        return {**self._head(self.chunk_kind()), "choices": [], "usage": usage(result)}
