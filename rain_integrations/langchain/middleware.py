"""``RainGuardMiddleware``: a RAIN guard inside ``langchain.agents.create_agent``.

LangChain v1 agents take guards as middleware. This one judges every tool
result before the model reads it (``wrap_tool_call``, sync and async; a
``ToolMessage`` or a ``Command``), with the user's latest question as the
judge's prompt, and optionally the agent's own answers (``wrap_model_call``).

Judging an answer needs the whole answer, yet a ``stream_mode="messages"``
client would get its tokens as the model makes them, before the verdict. So
with ``apply_to_output`` the model's token stream is held back (its run is
tagged ``nostream``, which LangGraph's message stream skips) and the checked
message is what the client receives, in one piece, when the model step ends:
text the guard withholds is never sent.

Install with ``pip install 'rain-search[agents]'``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from rain_search.extras import require

require("langchain.agents", "agents", "RainGuardMiddleware")

from langchain.agents.middleware import (  # noqa: E402
    AgentMiddleware,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    ToolCallRequest,
)
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage  # noqa: E402
from langgraph.constants import TAG_NOSTREAM  # noqa: E402
from langgraph.types import Command  # noqa: E402

from rain_integrations.langchain.guard import RainGuard  # noqa: E402
from rain_integrations.langchain.tool_results import (  # noqa: E402
    aguard_result,
    guard_result,
    with_verdict,
)
from rain_search.errors import ConfigError  # noqa: E402

ToolResult = ToolMessage | Command[Any]
ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]


class RainGuardMiddleware(AgentMiddleware):
    """Judge an agent's tool results (and, optionally, its answers) with RAIN.

    ``guard`` is a :class:`RainGuard`; or give its options here instead
    (``evaluator=``, ``llm=``, ``policy=``, ``threshold=``, ``replacement=``...).
    ``tools`` limits the judging to the tools of those names. A judged
    message carries ``response_metadata["rain_guard"]`` (score and action); a
    tool's own ``artifact`` is kept.
    """

    def __init__(
        self,
        guard: RainGuard | None = None,
        *,
        apply_to_tool_results: bool = True,
        apply_to_output: bool = False,
        tools: Collection[str] | None = None,
        **guard_options: Any,
    ) -> None:
        super().__init__()
        if guard is not None and guard_options:
            raise ConfigError(f"pass a RainGuard or its options {sorted(guard_options)}, not both")
        if not (apply_to_tool_results or apply_to_output):
            raise ConfigError(
                "RainGuardMiddleware with apply_to_tool_results=False and apply_to_output=False "
                "judges nothing; enable one of them"
            )
        if isinstance(tools, str):
            raise ConfigError(f"tools= takes a list of tool names, e.g. [{tools!r}]")
        self.guard = guard if guard is not None else RainGuard(**guard_options)
        self.apply_to_tool_results = apply_to_tool_results
        self.apply_to_output = apply_to_output
        self.tool_names = None if tools is None else frozenset(tools)

    # -- tool results ----------------------------------------------------------------

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]
    ) -> ToolResult:
        result = handler(request)
        if not self._judges(request):
            return result
        checked: ToolResult = guard_result(self.guard, result, latest_question(request.state))
        return checked

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        result = await handler(request)
        if not self._judges(request):
            return result
        question = latest_question(request.state)
        checked: ToolResult = await aguard_result(self.guard, result, question)
        return checked

    def _judges(self, request: ToolCallRequest) -> bool:
        if not self.apply_to_tool_results:
            return False
        return self.tool_names is None or request.tool_call["name"] in self.tool_names

    # -- the agent's answers ---------------------------------------------------------

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResult:
        if not self.apply_to_output:
            return handler(request)
        question = latest_question({"messages": request.messages})
        response = handler(held(request))
        return _each_message(
            response, lambda m: with_verdict(m, *self.guard.check(m.text, question))
        )

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResult:
        if not self.apply_to_output:
            return await handler(request)
        question = latest_question({"messages": request.messages})
        response = await handler(held(request))
        checked = {}
        for message in _answers(response):
            checked[id(message)] = with_verdict(
                message, *await self.guard.acheck(message.text, question)
            )
        return _each_message(response, lambda m: checked[id(m)])


def held(request: ModelRequest) -> ModelRequest:
    """The request with its model's token stream held back from ``stream_mode="messages"``."""
    model = request.model
    if not isinstance(model, BaseChatModel):
        return request
    tags = [*(model.tags or []), TAG_NOSTREAM]
    return request.override(model=model.model_copy(update={"tags": tags}))


def latest_question(state: Any) -> str | None:
    """The text of the last human message in the agent's state (None if it has none)."""
    messages = state.get("messages", []) if isinstance(state, dict) else []
    if not isinstance(messages, Sequence):
        return None
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return None


def _answers(response: ModelResult) -> list[AIMessage]:
    """The AI messages with text that a model step produced."""
    if isinstance(response, ExtendedModelResponse):
        return _answers(response.model_response)
    messages: list[BaseMessage] = (
        [response] if isinstance(response, AIMessage) else list(response.result)
    )
    return [m for m in messages if isinstance(m, AIMessage) and m.text.strip()]


def _each_message(response: ModelResult, change: Callable[[AIMessage], BaseMessage]) -> ModelResult:
    """``response`` with each of its :func:`_answers` passed through ``change``."""
    judged = {id(m) for m in _answers(response)}
    if isinstance(response, ExtendedModelResponse):
        inner = _each_message(response.model_response, change)
        assert isinstance(inner, ModelResponse)
        return ExtendedModelResponse(model_response=inner, command=response.command)
    if isinstance(response, AIMessage):
        return change(response) if id(response) in judged else response  # type: ignore[return-value]
    result = [
        change(m) if isinstance(m, AIMessage) and id(m) in judged else m for m in response.result
    ]
    return ModelResponse(result=result, structured_response=response.structured_response)
