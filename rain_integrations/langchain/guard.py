"""``RainGuard``: a Runnable that judges text (e.g. an agent's tool output) and acts on it.

The judge is the same as the search's: an evaluation template read by the
model itself, a second model, or any scoring function. Text scoring below
``threshold`` is annotated, replaced, or rewritten by a RAIN generation,
whichever ``policy`` says; good text passes through unchanged. The deciding
is shared with the LlamaIndex guards (:mod:`rain_integrations._guard`); this
module gives it LangChain's shapes, sync and async.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.tools import BaseTool
from pydantic import ConfigDict

from rain_integrations._guard import GuardSettings, Verdict
from rain_integrations.langchain import _events
from rain_integrations.langchain.guarded_tool import GuardedTool
from rain_integrations.langchain.tool_results import subject_of, with_verdict
from rain_search.errors import PromptError

if TYPE_CHECKING:
    from rain_integrations._guard import Decision


class RainGuard(GuardSettings, RunnableSerializable[Any, Any]):
    """Judge text and pass, annotate, replace, regenerate or block it.

    Input: a string, a message (e.g. a ``ToolMessage``), or a dict with
    ``text`` and optionally ``prompt`` (what the text answers). The output has
    the input's type; messages get ``response_metadata["rain_guard"]`` with
    the score and the action taken. Under ``ainvoke`` a sync judge runs in a
    worker thread and an async one on the loop, so an async agent's event loop
    keeps running.

    Each decision is logged and sent to the run's callbacks as the custom event
    ``rain_guard`` (score, action, threshold, what was judged; never the text).
    ``policy="block"`` raises :class:`~rain_integrations.langchain.GuardViolation`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    def emit(self, decision: Decision) -> None:
        _events.emit(decision)

    async def aemit(self, decision: Decision) -> None:
        await _events.aemit(decision)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._guard, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._aguard, input, config, **kwargs)

    def _guard(self, input: Any) -> Any:
        text, prompt = _text_and_prompt(input)
        return _like(input, *self.check(text, prompt, _subject(input)))

    async def _aguard(self, input: Any) -> Any:
        text, prompt = _text_and_prompt(input)
        return _like(input, *await self.acheck(text, prompt, _subject(input)))

    def wrap_tool(self, tool: BaseTool) -> BaseTool:
        """The same tool, its results passed through this guard before the agent reads them.

        Sync and async-only tools both work under ``invoke`` and ``ainvoke``. A
        tool call gets the tool's own ``ToolMessage`` back (its artifact kept),
        with the verdict in ``response_metadata["rain_guard"]``; a tool that
        returns a ``Command`` keeps its state update, its messages judged.
        """
        return GuardedTool.of(tool, self)


def _text_and_prompt(input: Any) -> tuple[str, str | None]:
    if isinstance(input, str):
        return input, None
    if isinstance(input, BaseMessage):
        return input.text, None
    if isinstance(input, dict) and isinstance(input.get("text"), str):
        return input["text"], input.get("prompt")
    raise PromptError(
        f"RainGuard takes a string, a message or a dict with 'text', got {type(input).__name__}"
    )


def _subject(input: Any) -> str:
    return subject_of(input) if isinstance(input, ToolMessage) else "text"


def _like(input: Any, text: str, verdict: Verdict) -> Any:
    """``text`` in the shape of ``input``, with the verdict attached where there is room."""
    if isinstance(input, str):
        return text
    if isinstance(input, BaseMessage):
        return with_verdict(input, text, verdict)
    return {**input, "text": text, "rain_guard": dict(verdict)}
