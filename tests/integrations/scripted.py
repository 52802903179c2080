"""A scripted tool-calling chat model for agent tests: the guard, not the model, is tested.

It answers with the messages of its script in turn (tool calls included), streams
an answer word by word through the callbacks as a real model does, and keeps
what it was shown, so a test can check what the agent's model read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr


def call(name: str, **args: Any) -> AIMessage:
    """A script line: the model calls tool ``name`` with ``args``."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call-{name}"}])


class ScriptedChatModel(BaseChatModel):
    script: list[AIMessage] = Field(default_factory=list)
    _seen: list[list[BaseMessage]] = PrivateAttr(default_factory=list)  # shared by copies

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def seen(self) -> list[list[BaseMessage]]:
        """The messages of each call, in order."""
        return self._seen

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self  # the script already says which tools it calls

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        turn = len(self._seen)
        self._seen.append(list(messages))
        return self.script[turn].model_copy(update={"id": f"scripted-{turn}"})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._next(messages)
        for word in (w for w in re.split(r"(\s)", message.text) if w):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word, id=message.id))
            if run_manager is not None:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        calls = [
            {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
            for i, c in enumerate(message.tool_calls)
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="", id=message.id, tool_call_chunks=calls, chunk_position="last"
            )
        )
