"""``RainGuard`` for LlamaIndex agents: tool outputs judged before the agent's LLM reads them.

``guard.wrap_tool(tool)`` (or ``wrap_tools``) gives a tool for ``FunctionAgent``,
``ReActAgent`` or ``AgentWorkflow`` whose output passes the guard first. The
judged text replaces the output everywhere the agent and its event stream see
it: the content blocks and ``raw_output`` alike, so no ``ToolCallResult`` event
carries the text the guard withheld; the verdict rides along as ``rain_guard``.
The judge reads the user's current message as the prompt, which an agent's
workflow context holds (a sync call, outside an agent, uses ``context``).

Built on llama-index-core alone: nothing here imports LangChain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import TextBlock
from llama_index.core.tools import BaseTool, FunctionTool, ToolOutput, adapt_to_async_tool
from llama_index.core.workflow import Context
from pydantic import ConfigDict, Field

from rain_integrations._guard import Verdict
from rain_integrations.llama_index.events import DispatchingGuard

CTX = "rain_guard_ctx"
"""The keyword under which an agent hands the guarded tool its workflow context."""


class GuardedToolOutput(ToolOutput):
    """A tool's output after the guard: the text shown, and the verdict."""

    rain_guard: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, *, rain_guard: dict[str, Any], **output: Any) -> None:
        super().__init__(**output)  # ToolOutput's own constructor takes no new fields
        self.rain_guard = rain_guard


class RainGuard(DispatchingGuard):
    """Judge LlamaIndex tool outputs and pass, replace, regenerate or block them.

    ``llm=`` is a :class:`~rain_integrations.llama_index.Rain` (its judge scores,
    its search rewrites under ``policy='regenerate'``), or give ``evaluator=``
    (and, for a sync one, its async twin ``aevaluator=``). Each decision is
    logged and dispatched as a :class:`~rain_integrations.llama_index.RainGuardEvent`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    def wrap_tool(self, tool: BaseTool) -> GuardedTool:
        """The same tool (name, description, argument schema), its output judged."""
        return GuardedTool(tool, self)

    def wrap_tools(self, tools: Sequence[BaseTool]) -> list[GuardedTool]:
        return [self.wrap_tool(tool) for tool in tools]

    def guarded(self, output: ToolOutput, question: str | None) -> GuardedToolOutput:
        return _replaced(output, *self.check(output.content, question, _subject(output)))

    async def aguarded(self, output: ToolOutput, question: str | None) -> GuardedToolOutput:
        checked = await self.acheck(output.content, question, _subject(output))
        return _replaced(output, *checked)


class GuardedTool(FunctionTool):
    """A tool whose every output passes a :class:`RainGuard`.

    It is a ``FunctionTool`` that asks for the workflow context only because
    LlamaIndex agents hand the context to such tools alone; the guard reads
    the user's message from it. The wrapped tool gets the context too when it
    asks for one itself.
    """

    def __init__(self, tool: BaseTool, guard: RainGuard) -> None:
        async def never_called(**kwargs: Any) -> None:  # call/acall below do the work
            raise AssertionError("GuardedTool runs through call/acall")

        super().__init__(async_fn=never_called, metadata=tool.metadata)
        self.requires_context, self.ctx_param_name = True, CTX
        self.tool, self.guard = tool, guard

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Outside an agent's workflow there is no user message: the judge reads ``context``."""
        return self.guard.guarded(self.tool(*args, **self._inner_kwargs(kwargs)), None)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        ctx = kwargs.pop(CTX, None)
        kwargs = self._inner_kwargs(kwargs, ctx)
        output = await adapt_to_async_tool(self.tool).acall(*args, **kwargs)
        return await self.guard.aguarded(output, await user_message(ctx))

    def _inner_kwargs(self, kwargs: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
        kwargs = {k: v for k, v in kwargs.items() if k != CTX}
        inner = self.tool
        if isinstance(inner, FunctionTool) and inner.ctx_param_name and ctx is not None:
            kwargs[inner.ctx_param_name] = ctx
        return kwargs


async def user_message(ctx: Context | None) -> str | None:
    """The user's current message, as an agent workflow keeps it in its context."""
    if ctx is None:
        return None
    value = await ctx.store.get("user_msg_str", default=None)
    return value if isinstance(value, str) else None


def _subject(output: ToolOutput) -> str:
    return f"tool result of {output.tool_name!r}"


def _replaced(output: ToolOutput, text: str, verdict: Verdict) -> GuardedToolOutput:
    """``output`` showing ``text``; when that is not the tool's own text, ``raw_output``
    is ``text`` too, so the withheld text is nowhere in what the agent emits."""
    changed = text != output.content
    return GuardedToolOutput(
        blocks=[TextBlock(text=text)] if changed else output.blocks,
        tool_name=output.tool_name,
        raw_input=output.raw_input,
        raw_output=text if changed else output.raw_output,
        is_error=output.is_error,
        rain_guard=dict(verdict),
    )
