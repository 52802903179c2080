"""The safety net behind ``apply_to_output``: answers that escaped the judged model.

:class:`RainGuardMiddleware` judges the agent's answers by handing the agent a
:class:`~rain_integrations.langchain._judged_model.JudgedChatModel`. A
middleware nested inside it that swaps the model (a fallback, a router) would
call a model of its own instead, unjudged. Such an answer arrives without a
verdict; it is judged here, late (its tokens may already have streamed), and
a warning says which middleware order avoids it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain.agents.middleware import ExtendedModelResponse, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage

from rain_integrations.langchain.tool_results import with_verdict

if TYPE_CHECKING:
    from rain_integrations._guard import GuardSettings

ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]
SUBJECT = "the model's answer"
LATE = (
    "an answer reached RainGuardMiddleware unjudged, so a middleware nested inside it "
    "replaced the agent's model; it was judged now, but its tokens may have streamed: "
    "list RainGuardMiddleware after any middleware that changes the model"
)
logger = logging.getLogger("rain_integrations.guard")


def unjudged(response: ModelResult) -> list[AIMessage]:
    """The AI messages with text in ``response`` that carry no guard's verdict."""
    if isinstance(response, ExtendedModelResponse):
        return unjudged(response.model_response)
    messages: list[BaseMessage] = (
        [response] if isinstance(response, AIMessage) else list(response.result)
    )
    return [
        m
        for m in messages
        if isinstance(m, AIMessage) and m.text.strip() and "rain_guard" not in m.response_metadata
    ]


def judge_late(guard: GuardSettings, response: ModelResult, question: str | None) -> ModelResult:
    late = unjudged(response)
    if not late:
        return response
    logger.warning(LATE)
    checked = {id(m): with_verdict(m, *guard.check(m.text, question, SUBJECT)) for m in late}
    return replaced(response, lambda m: checked.get(id(m), m))


async def ajudge_late(
    guard: GuardSettings, response: ModelResult, question: str | None
) -> ModelResult:
    late = unjudged(response)
    if not late:
        return response
    logger.warning(LATE)
    checked = {}
    for message in late:
        checked[id(message)] = with_verdict(
            message, *await guard.acheck(message.text, question, SUBJECT)
        )
    return replaced(response, lambda m: checked.get(id(m), m))


def replaced(response: ModelResult, change: Callable[[BaseMessage], BaseMessage]) -> ModelResult:
    """``response`` with each message passed through ``change``, its shape kept."""
    if isinstance(response, ExtendedModelResponse):
        inner = replaced(response.model_response, change)
        assert isinstance(inner, ModelResponse)
        return ExtendedModelResponse(model_response=inner, command=response.command)
    if isinstance(response, AIMessage):
        changed = change(response)
        assert isinstance(changed, AIMessage)
        return changed
    result = [change(m) for m in response.result]
    return ModelResponse(result=result, structured_response=response.structured_response)
