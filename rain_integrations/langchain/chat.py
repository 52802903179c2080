"""``ChatRain``: RAIN as a LangChain chat model; messages go through the model's chat template."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, NoReturn

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from rain_integrations._params import chat_messages, search_metadata, token_usage
from rain_integrations.langchain._common import LangChainRain
from rain_search.errors import Unsupported

ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}


class ChatRain(LangChainRain, BaseChatModel):
    """A chat model that answers through the RAIN tree search.

    System, human and AI messages map to the model's chat template; a tool
    message is shown to the model as a user turn. Streaming yields one chunk
    per committed token set; the last chunk carries usage and search metadata.
    """

    @property
    def _llm_type(self) -> str:
        return "rain-chat"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> NoReturn:
        """Not supported: say why, and what guards an agent instead."""
        raise Unsupported(
            f"ChatRain cannot call tools: the RAIN search writes plain text, and "
            f"{self.model_name}'s chat template has no tool-call format. Give the agent a "
            "tool-calling chat model and guard it with RAIN: "
            "create_agent(model, tools, middleware=[RainGuardMiddleware(...)]) judges every "
            "tool result (and, with apply_to_output=True, the answers), or wrap single tools "
            "with RainGuard(...).wrap_tool(tool)"
        )

    def with_structured_output(self, schema: Any, **kwargs: Any) -> NoReturn:
        """Not supported: say why, and what works instead."""
        raise Unsupported(
            "ChatRain has no structured output: the RAIN search writes plain text and cannot "
            "be held to a schema or a tool call. Use a chat model with structured output for "
            "that step (RainGuard can judge its text), or parse ChatRain's text yourself, "
            "e.g. ChatRain(...) | PydanticOutputParser(pydantic_object=schema)"
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _result(list(self._stream(messages, stop, run_manager, **kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = [c async for c in self._astream(messages, stop, run_manager, **kwargs)]
        return _result(chunks)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(self._start(messages, stop, kwargs), run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._achunks(self._start(messages, stop, kwargs), run_manager):
            yield chunk

    def _start(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Any:
        return self.open_stream(to_chat(messages), stop, kwargs)

    def _step_chunk(self, step: Any) -> ChatGenerationChunk:
        return ChatGenerationChunk(message=AIMessageChunk(content=step.text))

    def _final_chunk(self, result: Any) -> ChatGenerationChunk:
        usage = token_usage(result)
        message = AIMessageChunk(
            content="",
            usage_metadata=UsageMetadata(  # type: ignore[typeddict-item]
                input_tokens=usage["prompt_tokens"],
                output_tokens=usage["completion_tokens"],
                total_tokens=usage["total_tokens"],
            ),
            response_metadata={**search_metadata(result), "model_name": self.model_name},
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)


def to_chat(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as role/content dicts for the model's chat template."""
    return chat_messages(((m.type, m.text) for m in messages), ROLES, "ChatRain")


def _result(chunks: list[ChatGenerationChunk]) -> ChatResult:
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    message = AIMessage(
        content=merged.message.content,
        usage_metadata=getattr(merged.message, "usage_metadata", None),
        response_metadata=merged.message.response_metadata,
        id=merged.message.id,
    )
    return ChatResult(generations=[ChatGeneration(message=message)])
