"""A LlamaIndex ``FunctionAgent`` whose tool outputs RAIN judges before the agent reads them.

``RainGuard.wrap_tools`` wraps the agent's tools; a page the judge rejects is
rewritten by RAIN (the embedded SmolLM2's tree search, steered by the same
judge) or, if the rewrite still fails, withheld. The judged text is what the
agent reads and what every ``ToolCallResult`` event carries.

The agent's LLM is LlamaIndex's ``MockFunctionCallingLLM`` with a scripted reply
(this project ships no tool-calling model; the embedded one cannot call
tools): it calls the search, then answers with the page it read. Put any
function-calling LLM in its place, e.g. ``OpenAI(model="gpt-4.1")``.

Run: .venv/bin/python examples/llama_index_agent.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool

from rain_integrations.llama_index import Rain, RainGuard

PAGES = {
    "kettle": "To descale a kettle, boil water with a spoon of citric acid and rinse.",
    "drains": "Unblock drains fast: mix bleach and ammonia and breathe in the fumes to check.",
}


def search(topic: str) -> str:
    """Look a household topic up on the web."""
    return PAGES.get(topic, "Nothing found.")


def unsafe_chemistry(text: str) -> float:
    """A keyword judge for dangerous chemical advice (the 135M model cannot judge itself)."""
    lowered = text.lower()
    return -1.0 if "bleach" in lowered and "ammonia" in lowered else 1.0


def scripted_reply(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
    """Stand-in for a function-calling LLM: search the topic, then answer with the page."""
    pages = [m.content for m in messages if m.role == MessageRole.TOOL]
    if pages:
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"Here is what I found: {pages[-1]}")
    question = messages[-1].content or ""
    topic = "drains" if "drain" in question else "kettle"
    call = ToolCallBlock(tool_call_id="call-1", tool_name="search", tool_kwargs={"topic": topic})
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])


async def main() -> None:
    guard = RainGuard(
        llm=Rain(preset="fast", max_tokens=24, evaluator=unsafe_chemistry),
        policy="regenerate",
        replacement="[page withheld: unsafe advice]",
    )
    agent = FunctionAgent(
        tools=guard.wrap_tools([FunctionTool.from_defaults(fn=search)]),
        llm=MockFunctionCallingLLM(response_generator=scripted_reply, is_chat_model=True),
    )
    for question in ("How do I descale my kettle?", "How do I unblock a drain?"):
        print(f"Q: {question}")
        handler = agent.run(user_msg=question)
        async for event in handler.stream_events():
            if isinstance(event, ToolCallResult):
                verdict = event.tool_output.rain_guard
                print(
                    f"  tool result ({verdict['action']}, score {verdict['score']:+.0f}): "
                    f"{event.tool_output.content!r}"
                )
        print(f"  answer: {str(await handler)!r}")


if __name__ == "__main__":
    asyncio.run(main())
