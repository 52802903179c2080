"""The LangChain guards tried as a new user would: options, policies, judges, channels.

The agent's model is scripted (:mod:`tests.integrations.scripted`) and the judge
a keyword function, so each test knows what the guard must catch. Every test
of a stream channel has its control: the same agent without the guard does
carry the unsafe text on that channel, so the check can fail.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest
from langchain.tools import ToolRuntime
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from pydantic import ValidationError

from rain_integrations.langchain import (
    GuardViolation,
    RainGuard,
    RainGuardMiddleware,
    RainLLM,
    UnknownOption,
)
from rain_search.errors import ConfigError
from rain_search.evaluators import FunctionEvaluator
from tests.integrations.scripted import ScriptedChatModel, call
from tests.integrations.test_agents import (
    QUESTION,
    UNSAFE,
    WITHHELD,
    agent_for,
    guard_middleware,
    search,
    tool_message,
    unsafe,
    what_the_model_read,
)

# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "meant"),
    [
        (lambda: RainGuard(evaluator=unsafe, treshold=0.5), "'threshold' for 'treshold'"),
        (lambda: RainGuard(evaluator=unsafe, strategy="block"), "'policy' for 'strategy'"),
        (
            lambda: RainGuardMiddleware(evaluator=unsafe, apply_to_outputs=True),
            "'apply_to_output' for 'apply_to_outputs'",
        ),
        (lambda: RainGuardMiddleware(evaluator=unsafe, strategy="block"), "'policy'"),
        (lambda: RainGuardMiddleware(evaluator=unsafe, apply_to_inputs=True), "'apply_to_input'"),
    ],
)
def test_a_misspelt_option_raises_naming_the_valid_ones(make: Any, meant: str) -> None:
    with pytest.raises(UnknownOption, match="valid options: .*threshold") as caught:
        make()
    assert meant in str(caught.value)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ConfigError)


def test_the_threshold_spelt_right_is_used() -> None:
    """The control of the misspelling above: a 0.3 score fails a 0.5 threshold."""
    assert RainGuard(evaluator=lambda t: 0.3, threshold=0.5, replacement=WITHHELD).invoke("x") == (
        WITHHELD
    )
    assert RainGuard(evaluator=lambda t: 0.3, replacement=WITHHELD).invoke("x") == "x"


def test_a_non_rain_llm_and_a_stray_positional_are_refused() -> None:
    with pytest.raises(ValidationError, match="llm= takes a RAIN model .*ScriptedChatModel"):
        RainGuard(llm=ScriptedChatModel())
    with pytest.raises(ConfigError, match="first argument is a RainGuard, got function"):
        RainGuardMiddleware(unsafe)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="unknown evaluator 42"):
        RainGuard(evaluator=42)


# -- policies and where the guard looks --------------------------------------------------


def test_block_raises_a_typed_violation_without_the_text() -> None:
    guard = RainGuard(evaluator=unsafe, policy="block")
    with pytest.raises(GuardViolation, match="blocked text: its score -1.000") as caught:
        guard.invoke(UNSAFE)
    assert "bleach" not in str(caught.value) and caught.value.score == -1.0
    assert guard.invoke("Boil water.") == "Boil water."


@pytest.mark.parametrize("where", ["tool", "output", "input"])
def test_the_middleware_blocks_the_run(where: str) -> None:
    options = {
        "tool": {},
        "output": {"apply_to_output": True, "apply_to_tool_results": False},
        "input": {"apply_to_input": True, "apply_to_tool_results": False},
    }[where]
    middleware = RainGuardMiddleware(evaluator=unsafe, policy="block", **options)
    agent, model = agent_for(search, middleware=[middleware], answer=UNSAFE)
    question = UNSAFE if where == "input" else QUESTION
    with pytest.raises(GuardViolation) as caught:
        agent.invoke({"messages": [HumanMessage(question)]})
    subject = {"tool": "tool result of 'search'", "output": "the model's answer"}
    assert subject.get(where, "the user's input") in str(caught.value)
    assert len(model.seen) == {"tool": 1, "output": 2, "input": 0}[where]


@pytest.mark.parametrize("where", ["tool", "output", "input"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_exit_behavior_end_ends_the_run_with_the_replacement(where: str, mode: str) -> None:
    options = {
        "tool": {},
        "output": {"apply_to_output": True, "apply_to_tool_results": False},
        "input": {"apply_to_input": True, "apply_to_tool_results": False},
    }[where]
    middleware = RainGuardMiddleware(
        evaluator=unsafe, policy="block", exit_behavior="end", replacement=WITHHELD, **options
    )
    agent, model = agent_for(search, middleware=[middleware], answer=UNSAFE)
    state = {"messages": [HumanMessage(UNSAFE if where == "input" else QUESTION)]}
    result = agent.invoke(state) if mode == "sync" else asyncio.run(agent.ainvoke(state))
    last = result["messages"][-1]
    assert isinstance(last, AIMessage) and last.content == WITHHELD
    assert last.response_metadata["rain_guard"] == {"score": -1.0, "action": "block"}
    assert len(model.seen) == {"tool": 1, "output": 2, "input": 0}[where]
    answers = [m.text for m in result["messages"] if isinstance(m, AIMessage)]
    assert "bleach" not in str(answers)  # the blocked answer is not in the state
    if where != "output":  # the model never read the blocked tool result or input
        assert "bleach" not in " ".join(m.text for seen in model.seen for m in seen)


def test_exit_behavior_needs_the_block_policy() -> None:
    with pytest.raises(ConfigError, match="set policy='block'"):
        RainGuardMiddleware(evaluator=unsafe, exit_behavior="end")
    with pytest.raises(ConfigError, match="'error' or 'end', got 'stop'"):
        RainGuardMiddleware(evaluator=unsafe, policy="block", exit_behavior="stop")  # type: ignore[arg-type]


def test_input_guarding_replaces_the_users_message_before_the_model_reads_it() -> None:
    middleware = guard_middleware(apply_to_input=True, apply_to_tool_results=False)
    agent, model = agent_for(search, middleware=[middleware])
    result = agent.invoke({"messages": [HumanMessage(UNSAFE)]})
    assert "bleach" not in " ".join(m.text for m in model.seen[0])
    (human,) = [m for m in result["messages"] if isinstance(m, HumanMessage)]
    assert human.content == WITHHELD and human.response_metadata["rain_guard"]["score"] == -1.0


def test_two_differently_judged_middleware_in_one_agent() -> None:
    @tool
    def recipe(topic: str) -> str:
        """Look a recipe up."""
        return "Boil the kettle, then add salt."

    judge_a = RainGuardMiddleware(evaluator=unsafe, replacement="[A]", tools=["search"])
    judge_b = RainGuardMiddleware(
        evaluator=lambda t: -1.0 if "boil" in t.lower() else 1.0,
        replacement="[B]",
        tools=["recipe"],
    )
    assert judge_a.name != judge_b.name and "tools=search" in judge_a.name
    script = [call("search", topic="drains"), call("recipe", topic="pasta"), AIMessage("Done.")]
    model = ScriptedChatModel(script=script)
    agent = create_agent(model, tools=[search, recipe], middleware=[judge_a, judge_b])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    contents = [m.content for m in result["messages"] if isinstance(m, ToolMessage)]
    assert contents == ["[A]", "[B]"]
    named = RainGuardMiddleware(evaluator=unsafe, name="drains")
    assert named.name == "RainGuardMiddleware[drains]"


# -- judges ------------------------------------------------------------------------------


async def async_unsafe(text: str) -> float:
    await asyncio.sleep(0)
    return unsafe(text)


def test_an_async_judge_works_under_invoke_and_ainvoke() -> None:
    guard = RainGuard(evaluator=async_unsafe, replacement=WITHHELD)
    assert guard.invoke(UNSAFE) == WITHHELD == asyncio.run(guard.ainvoke(UNSAFE))
    agent, model = agent_for(search, middleware=[RainGuardMiddleware(guard)])
    asyncio.run(agent.ainvoke({"messages": [HumanMessage(QUESTION)]}))
    assert "bleach" not in what_the_model_read(model)


def test_a_sync_async_judge_pair_uses_each_side_for_its_kind_of_call() -> None:
    calls: list[str] = []

    def sync_judge(text: str) -> float:
        calls.append("sync")
        return unsafe(text)

    async def async_judge(prompt: str, text: str) -> float:
        calls.append("async")
        return unsafe(text)

    guard = RainGuard(evaluator=sync_judge, aevaluator=async_judge, replacement=WITHHELD)
    assert guard.invoke(UNSAFE) == WITHHELD and asyncio.run(guard.ainvoke(UNSAFE)) == WITHHELD
    assert calls == ["sync", "async"]
    with pytest.raises(ValidationError, match="aevaluator= takes an async function"):
        RainGuard(evaluator=sync_judge, aevaluator=sync_judge)


def test_a_runnable_judge_reads_the_prompt_and_the_text() -> None:
    seen: list[dict[str, str]] = []

    def score(pair: dict[str, str]) -> float:
        seen.append(pair)
        return unsafe(pair["text"])

    guard = RainGuard(evaluator=RunnableLambda(score), replacement=WITHHELD)
    assert guard.invoke({"text": UNSAFE, "prompt": QUESTION})["text"] == WITHHELD
    assert asyncio.run(guard.ainvoke("Boil water.")) == "Boil water."
    assert seen == [{"prompt": QUESTION, "text": UNSAFE}, {"prompt": "", "text": "Boil water."}]


class Flaky(ConnectionError):
    """A judge's transient failure, which a caller retries on by type."""


@pytest.mark.parametrize("wrap", [lambda f: f, lambda f: FunctionEvaluator(f)])
def test_a_judges_error_keeps_its_type_so_with_retry_retries_it(wrap: Any) -> None:
    failures = [Flaky("judge offline"), Flaky("judge offline")]

    def judge(text: str) -> float:
        if failures:
            raise failures.pop()
        return unsafe(text)

    guard = RainGuard(evaluator=wrap(judge), replacement=WITHHELD)
    with pytest.raises(Flaky):
        guard.invoke(UNSAFE)
    retried = guard.with_retry(retry_if_exception_type=(Flaky,), stop_after_attempt=3)
    assert retried.invoke(UNSAFE) == WITHHELD and not failures


# -- decisions: logged and sent to callbacks ---------------------------------------------


class Decisions(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_decisions_are_custom_events_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    decisions = Decisions()
    agent, _ = agent_for(search, middleware=[guard_middleware()])
    with caplog.at_level(logging.INFO, logger="rain_integrations.guard"):
        agent.invoke({"messages": [HumanMessage(QUESTION)]}, {"callbacks": [decisions]})
    ((name, data),) = decisions.events
    assert name == "rain_guard" and data["action"] == "replace" and data["score"] == -1.0
    assert data["subject"] == "tool result of 'search'" and "bleach" not in str(data)
    assert "tool result of 'search': score -1.000 (threshold 0.0) -> replace" in caplog.text
    RainGuard(evaluator=unsafe).invoke("fine", {"callbacks": [decisions]})
    assert decisions.events[-1][1]["action"] == "pass"


# -- every stream channel carries only judged text ---------------------------------------


def both_guarded() -> list[RainGuardMiddleware]:
    return [guard_middleware(apply_to_output=True)]


MODES = ["values", "updates", "messages", "tools", "debug", "tasks", "checkpoints"]


def stream_mode_text(mode: str, middleware: list[RainGuardMiddleware]) -> str:
    agent, _ = agent_for(search, middleware=middleware, answer=UNSAFE, checkpointer=InMemorySaver())
    state = {"messages": [HumanMessage(QUESTION)]}
    config = {"configurable": {"thread_id": "t"}}
    return str(list(agent.stream(state, config, stream_mode=mode)))


@pytest.mark.parametrize("mode", MODES)
def test_each_stream_mode_carries_only_judged_text(mode: str) -> None:
    assert "bleach" in stream_mode_text(mode, [])
    guarded = stream_mode_text(mode, both_guarded())
    assert "bleach" not in guarded and WITHHELD in guarded


async def events_text(version: str, middleware: list[RainGuardMiddleware]) -> list[str]:
    agent, _ = agent_for(search, middleware=middleware, answer=UNSAFE)
    state = {"messages": [HumanMessage(QUESTION)]}
    if version == "v2":
        return [
            f"{e['event']} {e['data']}" async for e in agent.astream_events(state, version="v2")
        ]
    with warnings.catch_warnings():  # "the v3 streaming protocol is experimental"
        warnings.simplefilter("ignore")
        run = await agent.astream_events(state, version="v3")
    return [f"{e['method']} {e['params']}" async for e in run]


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_astream_events_carry_only_judged_text(version: str) -> None:
    leaked = [e.split()[0] for e in asyncio.run(events_text(version, [])) if "bleach" in e]
    expected = {"v2": {"on_tool_end", "on_chat_model_stream"}, "v3": {"tools", "messages"}}
    assert expected[version] <= set(leaked)
    guarded = asyncio.run(events_text(version, both_guarded()))
    assert not [e for e in guarded if "bleach" in e]
    assert any(WITHHELD in e for e in guarded)


def test_a_tool_guarded_with_wrap_tool_reports_only_the_judged_result() -> None:
    guarded = RainGuard(evaluator=unsafe, replacement=WITHHELD).wrap_tool(search)
    agent, _ = agent_for(guarded)

    async def collect() -> list[dict[str, Any]]:
        state = {"messages": [HumanMessage(QUESTION)]}
        return [e async for e in agent.astream_events(state, version="v2")]

    events = asyncio.run(collect())
    (end,) = [e for e in events if e["event"] == "on_tool_end"]
    assert end["data"]["output"].content == WITHHELD and end["name"] == "search"
    assert not [e for e in events if "bleach" in str(e["data"])]


def test_the_custom_channel_is_the_tools_own_and_not_judged() -> None:
    """Documented: what a tool writes itself with the stream writer is not judged."""

    @tool
    def chatty(topic: str) -> str:
        """Look a topic up, telling the client as it goes."""
        get_stream_writer()({"progress": UNSAFE})
        return UNSAFE

    agent, _ = agent_for(chatty, middleware=both_guarded())
    chunks = list(agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="custom"))
    assert "bleach" in str(chunks)
    assert (
        tool_message(
            agent_for(chatty, middleware=both_guarded())[0].invoke(
                {"messages": [HumanMessage(QUESTION)]}
            )
        ).content
        == WITHHELD
    )


def test_a_given_evaluator_judges_without_loading_the_llms_model() -> None:
    """llm= is then only the rewriter: judging must not load it (here it cannot load)."""
    never_loaded = RainLLM(model_id="/nonexistent/model")
    guard = RainGuard(llm=never_loaded, evaluator=unsafe, replacement=WITHHELD)
    assert guard.invoke(UNSAFE) == WITHHELD and guard.invoke("Boil water.") == "Boil water."
    assert "RainLLM" not in guard.judge_name


def test_a_tools_own_output_deltas_are_not_judged_but_its_result_is() -> None:
    """Documented: partial output a tool streams itself goes out before it has finished."""

    @tool
    def streaming(topic: str, runtime: ToolRuntime) -> str:
        """Look a topic up, streaming the page as it comes."""
        runtime.emit_output_delta(UNSAFE)
        return UNSAFE

    agent, _ = agent_for(streaming, middleware=both_guarded())
    chunks = list(agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="tools"))
    events = {c["event"]: str(c) for c in chunks}
    assert "bleach" in events["tool-output-delta"]
    assert "bleach" not in events["tool-finished"] and WITHHELD in events["tool-finished"]


def test_in_a_chain_the_models_own_token_events_come_before_the_guard() -> None:
    """Documented: a chain's result is judged, its model's own stream events are not."""
    chain = ScriptedChatModel(script=[AIMessage(UNSAFE)]) | RainGuard(
        evaluator=unsafe, replacement=WITHHELD
    )

    async def collect() -> list[dict[str, Any]]:
        return [e async for e in chain.astream_events(QUESTION, version="v2")]

    events = asyncio.run(collect())
    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert "bleach" in str([e["data"] for e in streamed])
    (end,) = [e for e in events if e["event"] == "on_chain_end" and not e["parent_ids"]]
    assert end["data"]["output"].content == WITHHELD


class SwapModel(AgentMiddleware):
    """A fallback-like middleware: it calls a model of its own instead of the agent's."""

    def __init__(self) -> None:
        super().__init__()
        self.model = ScriptedChatModel(script=[AIMessage(UNSAFE)])

    def wrap_model_call(self, request: ModelRequest, handler: Any) -> Any:
        return handler(request.override(model=self.model))


def test_an_answer_from_a_model_swapped_inside_the_guard_is_judged_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = guard_middleware(apply_to_output=True, apply_to_tool_results=False)
    model = ScriptedChatModel(script=[AIMessage("unused")])
    agent = create_agent(model, middleware=[guard, SwapModel()])
    with caplog.at_level(logging.WARNING, logger="rain_integrations.guard"):
        result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert result["messages"][-1].content == WITHHELD
    assert "list RainGuardMiddleware after any middleware that changes the model" in caplog.text
    caplog.clear()
    inside = create_agent(model, middleware=[SwapModel(), guard])  # the guard wraps the swap
    with caplog.at_level(logging.WARNING, logger="rain_integrations.guard"):
        assert inside.invoke({"messages": [HumanMessage(QUESTION)]})["messages"][-1].content == (
            WITHHELD
        )
    assert "list RainGuardMiddleware" not in caplog.text
