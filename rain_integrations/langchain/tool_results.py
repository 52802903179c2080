"""Guarding what a LangChain tool returns: text, a ``ToolMessage`` or a LangGraph ``Command``.

An agent's tool node accepts three kinds of result, and each must reach the
model only after the judge has read it: a plain value, a ``ToolMessage``
(whose ``artifact`` belongs to the tool and is kept; the verdict goes to
``response_metadata["rain_guard"]``), and a ``Command`` whose state update
adds messages (each judged; the rest of the update is kept as it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, ToolMessage, convert_to_messages

from rain_search.errors import ConfigError

if TYPE_CHECKING:
    from rain_integrations._guard import GuardSettings, Verdict


def command_type() -> type | None:
    """LangGraph's ``Command`` class, or None where LangGraph is not installed (then no
    tool can return one)."""
    try:
        from langgraph.types import Command
    except ImportError:
        return None
    return Command


def guard_result(guard: GuardSettings, result: Any, prompt: str | None, tool: str) -> Any:
    """``result`` of tool ``tool`` with every text the model would read judged and acted on."""
    subject = f"tool result of {tool!r}"
    if isinstance(result, BaseMessage):
        return with_verdict(result, *guard.check(result.text, prompt, subject))
    if _is_command(result):
        checked = [
            with_verdict(m, *guard.check(m.text, prompt, subject)) for m in added(result.update)
        ]
        return replace(result, update=with_messages(result.update, checked))
    text, verdict = guard.check(_as_text(result), prompt, subject)
    return result if verdict["action"] in ("pass", "annotate") else text


async def aguard_result(guard: GuardSettings, result: Any, prompt: str | None, tool: str) -> Any:
    """:func:`guard_result` for async agents (the judge runs off the event loop)."""
    subject = f"tool result of {tool!r}"
    if isinstance(result, BaseMessage):
        return with_verdict(result, *await guard.acheck(result.text, prompt, subject))
    if _is_command(result):
        checked = [
            with_verdict(m, *await guard.acheck(m.text, prompt, subject))
            for m in added(result.update)
        ]
        return replace(result, update=with_messages(result.update, checked))
    text, verdict = await guard.acheck(_as_text(result), prompt, subject)
    return result if verdict["action"] in ("pass", "annotate") else text


def subject_of(message: ToolMessage) -> str:
    """What a decision on ``message`` names as judged."""
    return f"tool result of {message.name!r}" if message.name else "a tool result"


def with_verdict(message: BaseMessage, text: str, verdict: Verdict) -> BaseMessage:
    """A copy of ``message`` saying ``text``, its verdict in ``response_metadata``."""
    metadata = {**message.response_metadata, "rain_guard": dict(verdict)}
    content = message.content if text == message.text else text
    return message.model_copy(update={"content": content, "response_metadata": metadata})


def _is_command(result: Any) -> bool:
    command = command_type()
    return command is not None and isinstance(result, command)


def added(update: Any) -> list[BaseMessage]:
    """The messages a ``Command``'s state update adds, as message objects.

    The update is a dict or a list of ``(key, value)`` pairs, as LangGraph takes
    them; messages sit under ``"messages"``, one or a list, as objects or in
    any form LangChain converts (dicts, ``(role, text)`` pairs).
    """
    return [m for key, value in _pairs(update) if key == "messages" for m in _listed(value)]


def with_messages(update: Any, messages: list[BaseMessage]) -> Any:
    """``update`` with the messages it adds replaced, in order, by ``messages``."""
    if update is None or not messages:
        return update
    if isinstance(update, dict):
        return {**update, "messages": messages}
    return [(key, value) for key, value in update if key != "messages"] + [("messages", messages)]


def _pairs(update: Any) -> list[tuple[Any, Any]]:
    if update is None:
        return []
    if isinstance(update, dict):
        return list(update.items())
    if isinstance(update, Sequence) and all(
        isinstance(pair, tuple) and len(pair) == 2 for pair in update
    ):
        return list(update)
    raise ConfigError(
        f"RainGuard cannot find the messages in a tool's Command(update=...) of type "
        f"{type(update).__name__}; return the update as a dict, e.g. "
        "Command(update={'messages': [ToolMessage(...)]})"
    )


def _listed(messages: Any) -> list[BaseMessage]:
    return convert_to_messages(messages if isinstance(messages, list) else [messages])


def _as_text(output: Any) -> str:
    return output.text if isinstance(output, BaseMessage) else str(output)
