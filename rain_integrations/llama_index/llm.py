"""``Rain``: RAIN as a LlamaIndex LLM (complete, chat, streaming and async)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import model_validator

from rain_integrations._params import RainParams, search_metadata, token_usage
from rain_search.errors import PromptError
from rain_search.models import context_window

ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.TOOL: "user",
}


class Rain(RainParams, CustomLLM):
    """A Hugging Face model answering through the RAIN tree search.

    >>> Settings.llm = Rain(preset="fast", max_new_tokens=64)   # doctest: +SKIP

    Streaming yields one response per committed token set. ``raw`` holds the
    finish reason, token usage and the search statistics.
    """

    @model_validator(mode="after")
    def _system_prompt_is_the_system_message(self) -> Rain:
        if self.system_prompt and self.system is None:
            self.system = self.system_prompt
        return self

    @classmethod
    def class_name(cls) -> str:
        return "Rain"

    @property
    def metadata(self) -> LLMMetadata:
        """Loads the model on first use: the context window comes from its config."""
        return LLMMetadata(
            context_window=context_window(self.rain.model) or 2048,
            num_output=self.config.max_new_tokens,
            is_chat_model=True,
            model_name=self.model_name,
        )

    # -- completion ------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        *_, last = self.stream_complete(prompt, formatted, **kwargs)
        return last

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        stream = self._start(prompt, kwargs)

        def gen() -> CompletionResponseGen:
            text = ""
            try:
                for step in stream:
                    text += step.text
                    yield CompletionResponse(text=text, delta=step.text)
            finally:
                stream.close()
            yield CompletionResponse(text=text, delta="", raw=_raw(stream.result))

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        responses = [r async for r in await self.astream_complete(prompt, formatted, **kwargs)]
        return responses[-1]

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = self._start(prompt, kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async for step in stream:
                text += step.text
                yield CompletionResponse(text=text, delta=step.text)
            yield CompletionResponse(text=text, delta="", raw=_raw(stream.result))

        return gen()

    # -- chat --------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        *_, last = self.stream_chat(messages, **kwargs)
        return last

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = self._start(to_chat(messages), kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            try:
                for step in stream:
                    text += step.text
                    yield _chat_response(text, step.text)
            finally:
                stream.close()
            yield _chat_response(text, "", _raw(stream.result))

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        responses = [r async for r in await self.astream_chat(messages, **kwargs)]
        return responses[-1]

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        stream = self._start(to_chat(messages), kwargs)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async for step in stream:
                text += step.text
                yield _chat_response(text, step.text)
            yield _chat_response(text, "", _raw(stream.result))

        return gen()

    def _start(self, prompt: Any, kwargs: dict[str, Any]) -> Any:
        return self.open_stream(prompt, kwargs.pop("stop", None), kwargs)


def to_chat(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    chat = []
    for message in messages:
        role = ROLES.get(message.role)
        if role is None:
            raise PromptError(
                f"Rain cannot send a {message.role.value!r} message to the model; use system, "
                "user, assistant or tool messages"
            )
        chat.append({"role": role, "content": message.content or ""})
    return chat


def _raw(result: Any) -> dict[str, Any]:
    return {**search_metadata(result), "usage": token_usage(result)}


def _chat_response(text: str, delta: str, raw: dict[str, Any] | None = None) -> ChatResponse:
    message = ChatMessage(role=MessageRole.ASSISTANT, content=text)
    return ChatResponse(message=message, delta=delta, raw=raw)
