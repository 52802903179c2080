"""``RainGuardMiddleware``: a RAIN guard inside ``langchain.agents.create_agent``.

LangChain v1 agents take guards as middleware. This one judges every tool
result before the model reads it (``wrap_tool_call``, sync and async; a
``ToolMessage`` or a ``Command``), with the user's latest question as the
judge's prompt; optionally the user's input (``apply_to_input``, once per
run, before the agent starts) and the agent's own answers (``apply_to_output``).

What a client can subscribe to carries only judged text: the tool runs inside
a :class:`~rain_integrations.langchain.guarded_tool.GuardedTool` and the model
inside a :class:`~rain_integrations.langchain._judged_model.JudgedChatModel`,
each of which runs its inner tool or model with no callbacks and reports the
run itself with the judged result. Every stream (``stream_mode="messages"``,
``"updates"``, ``"values"``, ``"tools"``, ``astream_events`` v2 and v3) is fed
from those callbacks or from the agent's state, which holds the judged text.

Instances stack: each has a ``name`` carrying what it judges and with which
judge (or the ``name=`` given), so judge A on one tool and judge B on another
are two middleware of one agent.

Install with ``pip install 'rain-search[agents]'``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Literal

from rain_search.extras import require

require("langchain.agents", "agents", "RainGuardMiddleware")

from langchain.agents.middleware import (  # noqa: E402
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
    ToolCallRequest,
    hook_config,
)
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langgraph.runtime import Runtime  # noqa: E402
from langgraph.types import Command  # noqa: E402

from rain_integrations._guard import GuardSettings, GuardViolation, Verdict  # noqa: E402
from rain_integrations._options import refuse_unknown  # noqa: E402
from rain_integrations.langchain._answers import ModelResult, ajudge_late, judge_late  # noqa: E402
from rain_integrations.langchain._judged_model import JudgedChatModel  # noqa: E402
from rain_integrations.langchain.guard import RainGuard  # noqa: E402
from rain_integrations.langchain.guarded_tool import GuardedTool  # noqa: E402
from rain_integrations.langchain.tool_results import with_verdict  # noqa: E402
from rain_search.errors import ConfigError  # noqa: E402

ToolResult = ToolMessage | Command[Any]
OWN_OPTIONS = (
    "guard",
    "apply_to_tool_results",
    "apply_to_output",
    "apply_to_input",
    "tools",
    "name",
)
INPUT = "the user's input"
ExitBehavior = Literal["error", "end"]


class RainGuardMiddleware(AgentMiddleware):
    """Judge an agent's tool results (and, optionally, its input and answers) with RAIN.

    ``guard`` is a :class:`RainGuard`; or give its options here instead
    (``evaluator=``, ``aevaluator=``, ``llm=``, ``policy=``, ``threshold=``,
    ``replacement=``...). ``tools`` limits the judging to the tools of those
    names. A judged message carries ``response_metadata["rain_guard"]`` (score
    and action); a tool's own ``artifact`` is kept. ``policy="block"`` stops the
    run: by raising :class:`~rain_integrations.langchain.GuardViolation`
    (``exit_behavior="error"``, the default) or by ending it with the guard's
    ``replacement`` as the agent's last message (``exit_behavior="end"``). An
    unknown option raises :class:`~rain_integrations.langchain.UnknownOption`
    naming the valid ones.
    """

    def __init__(
        self,
        guard: RainGuard | None = None,
        *,
        apply_to_tool_results: bool = True,
        apply_to_output: bool = False,
        apply_to_input: bool = False,
        tools: Collection[str] | None = None,
        name: str | None = None,
        exit_behavior: ExitBehavior = "error",
        **guard_options: Any,
    ) -> None:
        super().__init__()
        guard_fields = set(RainGuard.model_fields) - {"name"}
        refuse_unknown(type(self).__name__, guard_options, guard_fields | set(OWN_OPTIONS))
        if guard is not None and not isinstance(guard, RainGuard):
            raise ConfigError(
                f"RainGuardMiddleware's first argument is a RainGuard, got "
                f"{type(guard).__name__}; pass a judge as evaluator=..."
            )
        if guard is not None and guard_options:
            raise ConfigError(f"pass a RainGuard or its options {sorted(guard_options)}, not both")
        if not (apply_to_tool_results or apply_to_output or apply_to_input):
            raise ConfigError(
                "RainGuardMiddleware with apply_to_tool_results, apply_to_output and "
                "apply_to_input all False judges nothing; enable one of them"
            )
        if isinstance(tools, str):
            raise ConfigError(f"tools= takes a list of tool names, e.g. [{tools!r}]")
        if tools is not None and not apply_to_tool_results:
            raise ConfigError("tools= names tools to judge, but apply_to_tool_results=False")
        self.guard = guard if guard is not None else RainGuard(**guard_options)
        self.apply_to_tool_results = apply_to_tool_results
        self.apply_to_output = apply_to_output
        self.apply_to_input = apply_to_input
        self.tool_names = None if tools is None else frozenset(tools)
        self._name = name
        self.exit_behavior = _checked_exit(exit_behavior, self.guard)

    @property
    def name(self) -> str:
        """``RainGuardMiddleware[<what it judges>, judge=<judge>]``, or with the ``name=``
        given: two guards of one agent need different names (LangChain refuses repeats)."""
        if self._name is not None:
            return f"{type(self).__name__}[{self._name}]"
        judged = [
            "input" if self.apply_to_input else "",
            _tools_part(self.tool_names) if self.apply_to_tool_results else "",
            "output" if self.apply_to_output else "",
        ]
        detail = ",".join([p for p in judged if p] + [f"judge={self.guard.judge_name}"])
        return f"{type(self).__name__}[{detail.replace(':', '_').replace('|', '_')}]"

    # -- the user's input ------------------------------------------------------------

    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        message = _last_human(state)
        if not self.apply_to_input or message is None:
            return None
        try:
            return _input_update(message, *self.guard.check(message.text, None, INPUT))
        except GuardViolation as violation:
            if self.exit_behavior == "error":
                raise
            return self._ended(violation)

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        message = _last_human(state)
        if not self.apply_to_input or message is None:
            return None
        try:
            return _input_update(message, *await self.guard.acheck(message.text, None, INPUT))
        except GuardViolation as violation:
            if self.exit_behavior == "error":
                raise
            return self._ended(violation)

    # -- ending the run instead of raising (exit_behavior="end") -----------------------

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """After a tool result this guard blocked, the run ends before the model reads it."""
        if self.exit_behavior != "end" or not self.apply_to_tool_results:
            return None
        blocked = _blocked_tool_result(state)
        return None if blocked is None else self._ended(blocked)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        return self.before_model(state, runtime)

    def _ended(self, violation: GuardViolation | ToolMessage) -> dict[str, Any]:
        """Jump to the end, the agent's last word being the guard's replacement."""
        return {"jump_to": "end", "messages": [self._blocked_answer(violation)]}

    def _blocked_answer(self, violation: GuardViolation | ToolMessage) -> AIMessage:
        if isinstance(violation, ToolMessage):
            verdict = violation.response_metadata["rain_guard"]
        else:
            verdict = {"score": violation.score, "action": "block"}
        return AIMessage(self.guard.replacement, response_metadata={"rain_guard": verdict})

    # -- tool results ----------------------------------------------------------------

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]
    ) -> ToolResult:
        try:
            return handler(self._guarded(request))
        except GuardViolation as violation:
            if self.exit_behavior == "error":
                raise
            return self._blocked_result(request, violation)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        try:
            return await handler(self._guarded(request))
        except GuardViolation as violation:
            if self.exit_behavior == "error":
                raise
            return self._blocked_result(request, violation)

    def _blocked_result(self, request: ToolCallRequest, violation: GuardViolation) -> ToolMessage:
        """The blocked tool's result: the replacement, marked so that ``before_model`` ends
        the run."""
        return ToolMessage(
            self.guard.replacement,
            tool_call_id=request.tool_call["id"],
            name=request.tool_call["name"],
            status="error",
            response_metadata={"rain_guard": {"score": violation.score, "action": "block"}},
        )

    def _guarded(self, request: ToolCallRequest) -> ToolCallRequest:
        """The request with its tool judged (see :class:`GuardedTool`), if this guard judges it."""
        if request.tool is None or not self._judges(request):
            return request
        tool = GuardedTool.of(request.tool, self.guard, latest_question(request.state))
        return request.override(tool=tool)

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
        try:
            return judge_late(self.guard, handler(judged(request, self.guard)), question)
        except GuardViolation as violation:
            if self.exit_behavior == "error":
                raise
            return ModelResponse(result=[self._blocked_answer(violation)])

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResult:
        if not self.apply_to_output:
            return await handler(request)
        question = latest_question({"messages": request.messages})
        try:
            response = await handler(judged(request, self.guard))
            return await ajudge_late(self.guard, response, question)
        except GuardViolation as violation:
            if self.exit_behavior == "error":
                raise
            return ModelResponse(result=[self._blocked_answer(violation)])


def judged(request: ModelRequest, guard: GuardSettings) -> ModelRequest:
    """The request with its model's answers judged before any callback sees them."""
    model = request.model
    if not isinstance(model, BaseChatModel):
        raise ConfigError(
            f"apply_to_output needs the agent's model to be a LangChain chat model, got "
            f"{type(model).__name__}"
        )
    question = latest_question({"messages": request.messages})
    return request.override(model=JudgedChatModel(model=model, guard=guard, question=question))


def _checked_exit(exit_behavior: str, guard: RainGuard) -> ExitBehavior:
    if exit_behavior == "error":
        return "error"
    if exit_behavior != "end":
        raise ConfigError(f"exit_behavior is 'error' or 'end', got {exit_behavior!r}")
    if guard.policy != "block":
        raise ConfigError(
            f"exit_behavior='end' acts on blocked text, but the policy is {guard.policy!r}; "
            "set policy='block'"
        )
    return "end"


def _blocked_tool_result(state: Any) -> ToolMessage | None:
    """A tool result of the latest step that a guard blocked (exit_behavior='end')."""
    messages = state.get("messages", []) if isinstance(state, dict) else []
    for message in reversed(messages):
        if not isinstance(message, ToolMessage):
            return None
        if message.response_metadata.get("rain_guard", {}).get("action") == "block":
            return message
    return None


def _tools_part(names: frozenset[str] | None) -> str:
    return "tools" if names is None else f"tools={'+'.join(sorted(names))}"


def _last_human(state: Any) -> HumanMessage | None:
    messages = state.get("messages", []) if isinstance(state, dict) else []
    if not isinstance(messages, Sequence):
        return None
    return next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)


def _input_update(message: HumanMessage, text: str, verdict: Verdict) -> dict[str, Any] | None:
    """The state update putting the judged message in place of the user's (same id)."""
    if verdict["action"] == "pass":
        return None
    return {"messages": [with_verdict(message, text, verdict)]}


def latest_question(state: Any) -> str | None:
    """The text of the last human message in the agent's state (None if it has none)."""
    message = _last_human(state)
    return None if message is None else message.text
