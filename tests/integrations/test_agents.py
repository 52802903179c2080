"""RainGuardMiddleware and RainGuard.wrap_tool inside real ``create_agent`` loops.

The agent's model is scripted (:mod:`tests.integrations.scripted`): it calls the
tools the script says and then answers, so each test knows what a guard must
catch. The judge is a keyword function; what is under test is where the guard
sits in the loop: sync and async, tool messages, artifacts, ``Command`` results,
the judge's prompt, and what a streaming client receives.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain.agents import AgentState, create_agent
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.types import Command
from typing_extensions import NotRequired

from rain_integrations.langchain import RainGuard, RainGuardMiddleware
from rain_search.errors import ConfigError
from tests.integrations.scripted import ScriptedChatModel, call

QUESTION = "How do I unblock a drain?"
UNSAFE = "Mix bleach and ammonia, then breathe in the fumes."
WITHHELD = "[withheld]"


def unsafe(text: str) -> float:
    return -1.0 if "bleach" in text.lower() else 1.0


@tool
def search(topic: str) -> str:
    """Look a household topic up."""
    return UNSAFE if topic == "drains" else "Boil water with citric acid."


@tool
async def asearch(topic: str) -> str:
    """Look a household topic up (an async-only tool)."""
    await asyncio.sleep(0)
    return UNSAFE


@tool(response_format="content_and_artifact")
def sourced(topic: str) -> tuple[str, dict[str, str]]:
    """Look a topic up and say where the page came from."""
    return UNSAFE, {"url": "https://example.invalid/drains"}


class NotesState(AgentState):
    notes: NotRequired[str]


@tool
def noting(topic: str, runtime: ToolRuntime) -> Command:
    """Look a topic up and note it in the agent's state."""
    message = ToolMessage(UNSAFE, tool_call_id=runtime.tool_call_id)
    return Command(update={"messages": [message], "notes": f"looked up {topic}"})


def agent_for(tool_: Any, *, middleware: list | None = None, answer: str = "Done.", **kwargs):
    model = ScriptedChatModel(script=[call(tool_.name, topic="drains"), AIMessage(answer)])
    agent = create_agent(model, tools=[tool_], middleware=middleware or [], **kwargs)
    return agent, model


def guard_middleware(**options: Any) -> RainGuardMiddleware:
    return RainGuardMiddleware(evaluator=unsafe, replacement=WITHHELD, **options)


def tool_message(result: dict) -> ToolMessage:
    (message,) = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    return message


def what_the_model_read(model: ScriptedChatModel) -> str:
    return " ".join(m.text for m in model.seen[-1])


def test_the_middleware_judges_tool_results_before_the_model_reads_them() -> None:
    agent, model = agent_for(search, middleware=[guard_middleware()])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    message = tool_message(result)
    assert message.content == WITHHELD
    assert message.response_metadata["rain_guard"] == {"score": -1.0, "action": "replace"}
    assert "bleach" not in what_the_model_read(model)
    assert result["messages"][-1].content == "Done."


def test_without_the_guard_the_model_reads_the_unsafe_page() -> None:
    """The control for the test above: the scripted loop does deliver the tool's text."""
    agent, model = agent_for(search)
    agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert "bleach" in what_the_model_read(model)


def test_the_judge_reads_the_users_latest_question() -> None:
    prompts: list[str] = []

    def judge(prompt: str, text: str) -> float:
        prompts.append(prompt)
        return unsafe(text)

    agent, _ = agent_for(search, middleware=[RainGuardMiddleware(evaluator=judge)])
    agent.invoke({"messages": [HumanMessage("First question"), HumanMessage(QUESTION)]})
    assert prompts == [QUESTION]


async def test_async_agents_with_an_async_only_tool() -> None:
    agent, model = agent_for(asearch, middleware=[guard_middleware()])
    result = await agent.ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert tool_message(result).content == WITHHELD
    assert "bleach" not in what_the_model_read(model)


def test_a_tools_artifact_is_kept_and_the_verdict_goes_to_metadata() -> None:
    agent, _ = agent_for(sourced, middleware=[guard_middleware()])
    message = tool_message(agent.invoke({"messages": [HumanMessage(QUESTION)]}))
    assert message.content == WITHHELD
    assert message.artifact == {"url": "https://example.invalid/drains"}
    assert message.response_metadata["rain_guard"]["action"] == "replace"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_command_results_are_judged_and_their_state_update_kept(mode: str) -> None:
    agent, model = agent_for(noting, middleware=[guard_middleware()], state_schema=NotesState)
    state = {"messages": [HumanMessage(QUESTION)]}
    result = agent.invoke(state) if mode == "sync" else asyncio.run(agent.ainvoke(state))
    assert tool_message(result).content == WITHHELD
    assert result["notes"] == "looked up drains"
    assert "bleach" not in what_the_model_read(model)


def test_only_the_named_tools_are_judged() -> None:
    agent, model = agent_for(search, middleware=[guard_middleware(tools=["another"])])
    agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert "bleach" in what_the_model_read(model)


def streamed_text(agent: Any, mode: str) -> str:
    state = {"messages": [HumanMessage(QUESTION)]}
    if mode == "sync":
        pieces = [m for m, _ in agent.stream(state, stream_mode="messages")]
    else:

        async def collect() -> list:
            return [m async for m, _ in agent.astream(state, stream_mode="messages")]

        pieces = asyncio.run(collect())
    return "".join(m.text for m in pieces if isinstance(m, AIMessage | AIMessageChunk))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_streaming_client_never_receives_an_answer_the_guard_withholds(mode: str) -> None:
    unguarded, _ = agent_for(search, answer=UNSAFE)
    assert "bleach" in streamed_text(unguarded, mode)  # streamed word by word without it
    middleware = guard_middleware(apply_to_output=True, apply_to_tool_results=False)
    guarded, _ = agent_for(search, middleware=[middleware], answer=UNSAFE)
    text = streamed_text(guarded, mode)
    assert "bleach" not in text and WITHHELD in text


def test_a_good_answer_still_reaches_the_streaming_client_whole() -> None:
    middleware = guard_middleware(apply_to_output=True)
    agent, _ = agent_for(search, middleware=[middleware], answer="Use a plunger, then hot water.")
    assert streamed_text(agent, "sync").endswith("Use a plunger, then hot water.")


def test_wrap_tool_inside_create_agent() -> None:
    guard = RainGuard(evaluator=unsafe, replacement=WITHHELD)
    for tool_ in (search, sourced):
        agent, model = agent_for(guard.wrap_tool(tool_))
        message = tool_message(agent.invoke({"messages": [HumanMessage(QUESTION)]}))
        assert message.content == WITHHELD
        assert "bleach" not in what_the_model_read(model)
    assert message.artifact == {"url": "https://example.invalid/drains"}


def test_wrap_tool_with_an_async_only_tool_under_invoke_and_ainvoke() -> None:
    guarded = RainGuard(evaluator=unsafe, replacement=WITHHELD).wrap_tool(asearch)
    assert guarded.invoke({"topic": "drains"}) == WITHHELD
    assert asyncio.run(guarded.ainvoke({"topic": "drains"})) == WITHHELD
    agent, _ = agent_for(guarded)
    assert tool_message(agent.invoke({"messages": [HumanMessage(QUESTION)]})).content == WITHHELD


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_wrap_tool_keeps_a_commands_state_update(mode: str) -> None:
    guarded = RainGuard(evaluator=unsafe, replacement=WITHHELD).wrap_tool(noting)
    agent, _ = agent_for(guarded, state_schema=NotesState)
    state = {"messages": [HumanMessage(QUESTION)]}
    result = agent.invoke(state) if mode == "sync" else asyncio.run(agent.ainvoke(state))
    assert tool_message(result).content == WITHHELD
    assert result["notes"] == "looked up drains"


def test_guard_ainvoke_judges_off_the_event_loop_thread() -> None:
    threads: list[int] = []

    def judge(text: str) -> float:
        threads.append(threading.get_ident())
        return unsafe(text)

    guard = RainGuard(evaluator=judge, replacement=WITHHELD)

    async def main() -> tuple[str, int]:
        return await guard.ainvoke(UNSAFE), threading.get_ident()

    output, loop_thread = asyncio.run(main())
    assert output == WITHHELD == guard.invoke(UNSAFE)
    assert threads[0] != loop_thread


def test_middleware_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="not both"):
        RainGuardMiddleware(RainGuard(evaluator=unsafe), evaluator=unsafe)
    with pytest.raises(ConfigError, match="judges nothing"):
        RainGuardMiddleware(evaluator=unsafe, apply_to_tool_results=False)
    with pytest.raises(ConfigError, match="list of tool names"):
        RainGuardMiddleware(evaluator=unsafe, tools="search")
