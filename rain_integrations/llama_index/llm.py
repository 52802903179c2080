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

from rain_integrations._params import RainParams, chat_messages, search_metadata, token_usage
from rain_search.errors import Unsupported
from rain_search.models import context_window

NO_STRUCTURED = (
    "Rain does not support {method}: RAIN's tree search decodes free text, with no "
    "function calling or schema-constrained decoding, so LlamaIndex's structured programs "
    "fail on its output with a JSON parsing error. Ask for the fields in the prompt and "
    "parse the text yourself (e.g. PydanticOutputParser), or use another LLM for "
    "structured prediction (as_structured_llm goes through {method} too)."
)

ROLES = {
    MessageRole.SYSTEM.value: "system",
    MessageRole.DEVELOPER.value: "system",
    MessageRole.USER.value: "user",
    MessageRole.ASSISTANT.value: "assistant",
    MessageRole.TOOL.value: "user",
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
        *_, last = self._completions(self.open_stream(prompt, kwargs.pop("stop", None), kwargs))
        return last

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return self._completions(self.open_stream(prompt, kwargs.pop("stop", None), kwargs))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        stream = self.open_stream(prompt, kwargs.pop("stop", None), kwargs)
        return [r async for r in self._acompletions(stream)][-1]

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return self._acompletions(self.open_stream(prompt, kwargs.pop("stop", None), kwargs))

    # -- chat --------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        *_, last = self._chats(self._open_chat(messages, kwargs))
        return last

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._chats(self._open_chat(messages, kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return [r async for r in self._achats(self._open_chat(messages, kwargs))][-1]

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return self._achats(self._open_chat(messages, kwargs))

    # -- structured prediction: refused with the reason ----------------------------------

    def structured_predict(self, *args: Any, **kwargs: Any) -> Any:
        raise Unsupported(NO_STRUCTURED.format(method="structured_predict"))

    async def astructured_predict(self, *args: Any, **kwargs: Any) -> Any:
        raise Unsupported(NO_STRUCTURED.format(method="astructured_predict"))

    def stream_structured_predict(self, *args: Any, **kwargs: Any) -> Any:
        raise Unsupported(NO_STRUCTURED.format(method="stream_structured_predict"))

    async def astream_structured_predict(self, *args: Any, **kwargs: Any) -> Any:
        raise Unsupported(NO_STRUCTURED.format(method="astream_structured_predict"))

    # -- steps to responses ------------------------------------------------------------

    def _open_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> Any:
        return self.open_stream(to_chat(messages), kwargs.pop("stop", None), kwargs)

    @staticmethod
    def _completions(stream: Any) -> CompletionResponseGen:
        text = ""
        try:
            for step in stream:
                text += step.text
                yield CompletionResponse(text=text, delta=step.text)
        finally:
            stream.close()
        yield CompletionResponse(text=text, delta="", raw=_raw(stream.result))

    @staticmethod
    async def _acompletions(stream: Any) -> CompletionResponseAsyncGen:
        text = ""
        async for step in stream:
            text += step.text
            yield CompletionResponse(text=text, delta=step.text)
        yield CompletionResponse(text=text, delta="", raw=_raw(stream.result))

    @staticmethod
    def _chats(stream: Any) -> ChatResponseGen:
        for response in Rain._completions(stream):
            yield _chat_response(response)

    @staticmethod
    async def _achats(stream: Any) -> ChatResponseAsyncGen:
        async for response in Rain._acompletions(stream):
            yield _chat_response(response)


def to_chat(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """LlamaIndex messages as role/content dicts for the model's chat template."""
    pairs = ((m.role.value, m.content or "") for m in messages)
    return chat_messages(pairs, ROLES, "Rain")


def _raw(result: Any) -> dict[str, Any]:
    return {**search_metadata(result), "usage": token_usage(result)}


def _chat_response(completion: CompletionResponse) -> ChatResponse:
    message = ChatMessage(role=MessageRole.ASSISTANT, content=completion.text)
    return ChatResponse(message=message, delta=completion.delta, raw=completion.raw)
