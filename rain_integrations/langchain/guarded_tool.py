"""``GuardedTool``: a LangChain tool whose every result passes a RAIN guard first.

It stands in for the tool it wraps (same name, description and argument
schema, so an agent binds and calls it the same way) and hands each call to
that tool unchanged, tool call and injected arguments included. The tool's
own result shape survives: its ``ToolMessage`` keeps its artifact, a
``Command`` keeps its state update; only the text the model would read changes.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, Tool
from pydantic import ConfigDict

from rain_integrations._guard import GuardSettings
from rain_integrations.langchain.tool_results import aguard_result, guard_result


class GuardedTool(BaseTool):
    """``tool``, its results judged by ``guard`` before the agent reads them.

    With no question to go on (a tool does not see the conversation), the
    judge reads the guard's ``context`` or, without one, the call itself
    (``name(args)``) as the prompt; :class:`RainGuardMiddleware` passes the
    user's latest question instead.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tool: BaseTool
    guard: GuardSettings

    @classmethod
    def of(cls, tool: BaseTool, guard: GuardSettings) -> GuardedTool:
        return cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            return_direct=tool.return_direct,
            tool=tool,
            guard=guard,
        )

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if async_only(self.tool):  # no sync body: run it on an event loop of its own
            with ThreadPoolExecutor(max_workers=1) as pool:
                call = self.tool.ainvoke(input, config, **kwargs)
                result = pool.submit(asyncio.run, call).result()
        else:
            result = self.tool.invoke(input, config, **kwargs)
        return guard_result(self.guard, result, self.prompt(input))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        result = await self.tool.ainvoke(input, config, **kwargs)
        return await aguard_result(self.guard, result, self.prompt(input))

    def prompt(self, input: Any) -> str:
        """What the judge reads as the question this result answers."""
        if self.guard.context:
            return self.guard.context
        args = input.get("args", input) if isinstance(input, dict) else input
        return f"{self.tool.name}({args})"

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """``tool.run(...)`` (the legacy entry point) goes through the guard as well."""
        return self.invoke(kwargs or (args[0] if args else {}))

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        return await self.ainvoke(kwargs or (args[0] if args else {}))


def async_only(tool: BaseTool) -> bool:
    """A tool built from a coroutine alone, which LangChain cannot call synchronously."""
    if isinstance(tool, GuardedTool):
        return async_only(tool.tool)
    return isinstance(tool, StructuredTool | Tool) and tool.func is None and bool(tool.coroutine)
