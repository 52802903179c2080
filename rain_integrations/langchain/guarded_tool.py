"""``GuardedTool``: a LangChain tool whose every result passes a RAIN guard first.

It stands in for the tool it wraps (same name, description and argument
schema, so an agent binds and calls it the same way) and hands each call to
that tool unchanged, tool call and injected arguments included. The tool's
own result shape survives: its ``ToolMessage`` keeps its artifact, a
``Command`` keeps its state update; only the text the model would read changes.

Every channel that reports a tool run (callbacks, ``astream_events`` v2's
``on_tool_end``, LangGraph's ``tools`` stream and v3 events) is fed from the
tool run's callbacks. So the wrapped tool runs with no callbacks of its own,
and this tool reports the run itself (``on_tool_start``, then ``on_tool_end``
with the *judged* result): the raw result is on no stream a client reads.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, patch_config
from langchain_core.tools import BaseTool, StructuredTool, Tool
from pydantic import ConfigDict

from rain_integrations._guard import GuardSettings
from rain_integrations.langchain.tool_results import aguard_result, guard_result

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForToolRun


class GuardedTool(BaseTool):
    """``tool``, its results judged by ``guard`` before the agent reads them.

    The judge's prompt is ``question`` when given (:class:`RainGuardMiddleware`
    passes the user's latest question), else the guard's ``context``, else the
    call itself (``name(args)``): a tool does not see the conversation.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tool: BaseTool
    guard: GuardSettings
    question: str | None = None

    @classmethod
    def of(cls, tool: BaseTool, guard: GuardSettings, question: str | None = None) -> GuardedTool:
        return cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            return_direct=tool.return_direct,
            tool=tool,
            guard=guard,
            question=question,
        )

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        positional, named = self._start(input, config)
        run = CallbackManager.configure(*self._callback_options(config)).on_tool_start(
            *positional, **named
        )
        try:
            result = self._call_silently(input, config, **kwargs)
            checked = guard_result(self.guard, result, self.prompt(input), self.name)
        except BaseException as exc:
            run.on_tool_error(exc)
            raise
        run.on_tool_end(checked, name=self.name)
        return checked

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        manager = AsyncCallbackManager.configure(*self._callback_options(config))
        positional, named = self._start(input, config)
        run: AsyncCallbackManagerForToolRun = await manager.on_tool_start(*positional, **named)
        try:
            result = await self.tool.ainvoke(input, silent(config), **kwargs)
            checked = await aguard_result(self.guard, result, self.prompt(input), self.name)
        except BaseException as exc:
            await run.on_tool_error(exc)
            raise
        await run.on_tool_end(checked, name=self.name)
        return checked

    def _call_silently(self, input: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        if async_only(self.tool):  # no sync body: run it on an event loop of its own
            with ThreadPoolExecutor(max_workers=1) as pool:
                call = self.tool.ainvoke(input, silent(config), **kwargs)
                return pool.submit(asyncio.run, call).result()
        return self.tool.invoke(input, silent(config), **kwargs)

    def _callback_options(self, config: RunnableConfig) -> tuple[Any, ...]:
        return (
            config.get("callbacks"),
            self.callbacks,
            bool(self.verbose),
            config.get("tags"),
            self.tags,
            config.get("metadata"),
            self.metadata,
        )

    def _start(
        self, input: Any, config: RunnableConfig
    ) -> tuple[tuple[dict[str, Any], str], dict[str, Any]]:
        """``on_tool_start``'s arguments, as ``BaseTool.run`` gives them (injected
        arguments, such as a ``ToolRuntime``, left out of what observers see)."""
        call_id = input.get("id") if _is_tool_call(input) else None
        args = input["args"] if _is_tool_call(input) else input
        shown = (
            {k: v for k, v in args.items() if k in self.tool.args}
            if isinstance(args, dict)
            else None
        )
        serialized = {"name": self.name, "description": self.description}
        return (serialized, str(shown if shown is not None else args)), {
            "name": config.get("run_name"),
            "run_id": config.pop("run_id", None),
            "inputs": shown,
            "tool_call_id": call_id,
        }

    def prompt(self, input: Any) -> str:
        """What the judge reads as the question this result answers."""
        if self.question is not None:
            return self.question
        if self.guard.context:
            return self.guard.context
        args = input.get("args", input) if isinstance(input, dict) else input
        return f"{self.tool.name}({args})"

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """``tool.run(...)`` (the legacy entry point) goes through the guard as well."""
        return self.invoke(kwargs or (args[0] if args else {}))

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        return await self.ainvoke(kwargs or (args[0] if args else {}))


def silent(config: RunnableConfig) -> RunnableConfig:
    """``config`` with no callbacks: the run it starts reports to no observer."""
    return patch_config(config, callbacks=CallbackManager(handlers=[]))


def _is_tool_call(input: Any) -> bool:
    return isinstance(input, dict) and input.get("type") == "tool_call" and "args" in input


def async_only(tool: BaseTool) -> bool:
    """A tool built from a coroutine alone, which LangChain cannot call synchronously."""
    if isinstance(tool, GuardedTool):
        return async_only(tool.tool)
    return isinstance(tool, StructuredTool | Tool) and tool.func is None and bool(tool.coroutine)
