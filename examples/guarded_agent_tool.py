"""A LangChain v1 agent guarded by RAIN: ``create_agent(..., middleware=[RainGuardMiddleware])``.

The agent looks household topics up with a search tool; one page carries a
dangerous instruction. RainGuardMiddleware judges every tool result before
the agent's model reads it (the user's question is the judge's prompt) and,
with ``policy="regenerate"``, has RAIN rewrite a bad page: the embedded SmolLM2
writes the new text through its tree search, steered away from what the judge
rejects; if the rewrite still fails, the page is withheld. ``apply_to_output``
judges the agent's answers too: the model runs unseen by any stream, and a
streaming client receives the checked answer in one piece.

The agent's own model is a scripted stand-in (``ScriptedToolCaller``): this
project ships no tool-calling model, and the embedded one cannot call tools.
It calls the tool, then answers with what it read, so the output shows what
reached it. Put any tool-calling chat model in its place, e.g.
``init_chat_model("openai:gpt-4.1")``.

Run: .venv/bin/python examples/guarded_agent_tool.py
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool

from rain_integrations.langchain import ChatRain, RainGuardMiddleware

PAGES = {
    "kettle": "To descale a kettle, boil water with a spoon of citric acid and rinse.",
    "drains": "Unblock drains fast: mix bleach and ammonia and breathe in the fumes to check.",
}


@tool
def search(topic: str) -> str:
    """Look a household topic up on the web."""
    return PAGES.get(topic, "Nothing found.")


def unsafe_chemistry(text: str) -> float:
    """A keyword judge for dangerous chemical advice (the 135M model cannot judge itself)."""
    lowered = text.lower()
    return -1.0 if "bleach" in lowered and "ammonia" in lowered else 1.0


class ScriptedToolCaller(BaseChatModel):
    """Stand-in for a tool-calling model: search the topic, then answer with the page."""

    topic_of: Callable[[str], str]

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedToolCaller:
        return self

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        pages = [m.text for m in messages if isinstance(m, ToolMessage)]
        if pages:
            return AIMessage(f"Here is what I found: {pages[-1]}")
        args = {"topic": self.topic_of(messages[-1].text)}
        return AIMessage("", tool_calls=[{"name": "search", "args": args, "id": "call-1"}])

    def _generate(self, messages: list[BaseMessage], *args: Any, **kw: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages)
        for word in reply.text.split(" ") if reply.text else []:  # word by word, like a model
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
            if run_manager is not None:
                run_manager.on_llm_new_token(word + " ", chunk=chunk)
            yield chunk
        calls = [{**c, "args": json.dumps(c["args"]), "index": 0} for c in reply.tool_calls]
        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=calls))


def main() -> None:
    rewriter = ChatRain(preset="fast", max_tokens=24, evaluator=unsafe_chemistry)
    guard = RainGuardMiddleware(
        llm=rewriter,  # judges with unsafe_chemistry; its RAIN search writes the rewrites
        policy="regenerate",
        replacement="[page withheld: unsafe advice]",
        apply_to_output=True,
    )
    model = ScriptedToolCaller(topic_of=lambda q: "drains" if "drain" in q else "kettle")
    agent = create_agent(model, tools=[search], middleware=[guard])

    for question in ("How do I descale my kettle?", "How do I unblock a drain?"):
        print(f"Q: {question}")
        result = agent.invoke({"messages": [("user", question)]})
        page = next(m for m in result["messages"] if isinstance(m, ToolMessage))
        verdict = page.response_metadata["rain_guard"]
        print(f"  tool result ({verdict['action']}, score {verdict['score']:+.0f}): {page.text!r}")
        print(f"  answer: {result['messages'][-1].text!r}")

    print("Streaming (stream_mode='messages'), what a client receives:")
    state = {"messages": [("user", "How do I unblock a drain?")]}
    for message, _ in agent.stream(state, stream_mode="messages"):
        if isinstance(message, AIMessage | AIMessageChunk) and message.text:
            print(f"  AI: {message.text!r}")


if __name__ == "__main__":
    main()
