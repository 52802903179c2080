"""RainGuard and RainNodePostprocessor inside real LlamaIndex agent loops and query engines.

The agents' LLM is LlamaIndex's own ``MockFunctionCallingLLM`` with a scripted
response generator (call the tool, then answer), or a scripted ReAct text for
``ReActAgent``; it records what it was shown. The judge is a keyword function:
what is under test is that no withheld text reaches the LLM or the event stream.
"""

# No `from __future__ import annotations`: FunctionTool finds a `ctx: Context` parameter by
# its annotation object, which that import would turn into a string.
import asyncio
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import (
    AgentWorkflow,
    FunctionAgent,
    ReActAgent,
    ToolCallResult,
)
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context

from rain_integrations.llama_index import RainGuard, RainNodePostprocessor

QUESTION = "How do I unblock a drain?"
UNSAFE = "Mix bleach and ammonia, then breathe in the fumes."
SAFE = "Pour boiling water, then use a plunger."
WITHHELD = "[withheld]"


def unsafe(text: str) -> float:
    return -1.0 if "bleach" in text.lower() else 1.0


def lookup(topic: str) -> str:
    """Look a household topic up."""
    return UNSAFE


search = FunctionTool.from_defaults(fn=lookup, name="search")


class Script:
    """A tool-calling LLM's turns: call ``search``, then answer; records each prompt."""

    def __init__(self, react: bool = False) -> None:
        self.react = react
        self.seen: list[str] = []

    def __call__(self, messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.seen.append(" ".join(m.content or "" for m in messages))
        # A function-calling agent sends tool messages; a ReAct agent an observation turn.
        called = any(m.role == MessageRole.TOOL for m in messages) or (
            self.react and len(self.seen) > 1
        )
        if self.react:
            text = (
                "Thought: I can answer without using any more tools.\nAnswer: Done."
                if called
                else 'Thought: I need to look it up.\nAction: search\nAction Input: {"topic": "x"}'
            )
            return ChatMessage(role=MessageRole.ASSISTANT, content=text)
        if called:
            return ChatMessage(role=MessageRole.ASSISTANT, content="Done.")
        block = ToolCallBlock(tool_call_id="call-1", tool_name="search", tool_kwargs={"topic": "x"})
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])


def agent_named(kind: str, tools: list, script: Script) -> Any:
    llm = MockFunctionCallingLLM(response_generator=script, is_chat_model=True)
    if kind == "react":
        return ReActAgent(tools=tools, llm=llm)
    agent = FunctionAgent(name="helper", description="Answers.", tools=tools, llm=llm)
    if kind == "workflow":
        return AgentWorkflow(agents=[agent], root_agent="helper")
    return agent


async def run(agent: Any) -> tuple[str, list[ToolCallResult]]:
    handler = agent.run(user_msg=QUESTION)
    results = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
    return str(await handler), results


@pytest.mark.parametrize("kind", ["function", "react", "workflow"])
def test_agents_read_the_guarded_output_and_events_carry_no_withheld_text(kind: str) -> None:
    script = Script(react=kind == "react")
    guard = RainGuard(evaluator=unsafe, replacement=WITHHELD)
    answer, results = asyncio.run(run(agent_named(kind, guard.wrap_tools([search]), script)))
    assert "Done." in answer
    (result,) = results
    assert result.tool_output.content == WITHHELD and result.tool_output.raw_output == WITHHELD
    assert "bleach" not in result.model_dump_json()
    assert result.tool_output.rain_guard == {"score": -1.0, "action": "replace"}
    assert "bleach" not in script.seen[-1] and WITHHELD in script.seen[-1]


def test_without_the_guard_the_agent_reads_the_unsafe_output() -> None:
    """The control: the scripted loop does deliver the tool's text to the LLM."""
    script = Script()
    asyncio.run(run(agent_named("function", [search], script)))
    assert "bleach" in script.seen[-1]


def test_the_judge_reads_the_users_message() -> None:
    prompts: list[str] = []

    def judge(prompt: str, text: str) -> float:
        prompts.append(prompt)
        return unsafe(text)

    tools = RainGuard(evaluator=judge).wrap_tools([search])
    asyncio.run(run(agent_named("function", tools, Script())))
    assert prompts == [QUESTION]


def test_a_tool_that_asks_for_the_context_still_gets_it() -> None:
    seen: list[bool] = []

    async def noted(ctx: Context, topic: str) -> str:
        """Look a topic up and note it."""
        seen.append(isinstance(ctx, Context))
        return UNSAFE

    tool = FunctionTool.from_defaults(async_fn=noted, name="search")
    guarded = RainGuard(evaluator=unsafe, replacement=WITHHELD).wrap_tool(tool)
    assert (
        guarded.metadata.name == "search"
        and "ctx" not in guarded.metadata.get_parameters_dict()["properties"]
    )
    _, (result,) = asyncio.run(run(agent_named("function", [guarded], Script())))
    assert seen == [True] and result.tool_output.content == WITHHELD


def test_a_guarded_tool_called_directly() -> None:
    guarded = RainGuard(evaluator=unsafe, replacement=WITHHELD).wrap_tool(search)
    output = guarded.call(topic="x")
    assert output.content == WITHHELD == output.raw_output
    passed = RainGuard(evaluator=lambda t: 1.0).wrap_tool(search).call(topic="x")
    assert passed.content == UNSAFE and passed.rain_guard["action"] == "pass"


def nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, id_=t[:4]), score=1.0) for t in (UNSAFE, SAFE)]


def test_the_node_postprocessor_drops_bad_chunks_and_leaves_the_index_alone() -> None:
    prompts: list[str] = []

    def judge(prompt: str, text: str) -> float:
        prompts.append(prompt)
        return unsafe(text)

    retrieved = nodes()
    kept = RainNodePostprocessor(evaluator=judge).postprocess_nodes(retrieved, query_str=QUESTION)
    assert [n.node.get_content() for n in kept] == [SAFE]
    assert prompts == [QUESTION, QUESTION]
    assert kept[0].node.metadata["rain_guard"]["action"] == "pass"
    assert "rain_guard" not in kept[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert retrieved[1].node.metadata == {}  # the retrieved node itself is untouched


def test_the_node_postprocessor_can_replace_instead_and_runs_async() -> None:
    post = RainNodePostprocessor(evaluator=unsafe, drop=False, replacement=WITHHELD)
    retrieved = nodes()
    kept = asyncio.run(post.apostprocess_nodes(retrieved, QueryBundle(QUESTION)))
    assert [n.node.get_content() for n in kept] == [WITHHELD, SAFE]
    assert retrieved[0].node.get_content() == UNSAFE


def test_a_query_engine_never_shows_the_llm_a_bad_chunk() -> None:
    index = VectorStoreIndex.from_documents(
        [Document(text=UNSAFE), Document(text=SAFE)], embed_model=MockEmbedding(embed_dim=8)
    )
    llm = MockLLM()  # answers with its whole prompt, so the answer shows what it was given
    plain = index.as_query_engine(llm=llm, similarity_top_k=2).query(QUESTION)
    assert "bleach" in str(plain)
    post = RainNodePostprocessor(evaluator=unsafe)
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[post])
    response = engine.query(QUESTION)
    assert "bleach" not in str(response) and SAFE in str(response)
    assert [n.node.get_content() for n in response.source_nodes] == [SAFE]
