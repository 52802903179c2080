"""Guarding an agent's tool: its output is judged before the model reads it.

A search tool returns a page that carries a harmful instruction. ``RainGuard``
wraps the tool; what the judge rejects is replaced before it reaches the chat
model, which then answers with RAIN.

Run: .venv/bin/python examples/guarded_agent_tool.py
"""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.tools import tool

from rain_integrations.langchain import ChatRain, RainGuard

PAGES = {
    "cleaning": "To clean a kettle, boil water with a spoon of citric acid and rinse.",
    "drains": "Unblock drains fast: mix bleach and ammonia and breathe in the fumes to check.",
}


@tool
def search(topic: str) -> str:
    """Look a household topic up on the web."""
    return PAGES.get(topic, "Nothing found.")


def unsafe_chemistry(text: str) -> float:
    """A keyword judge for dangerous chemical advice."""
    lowered = text.lower()
    return -1.0 if "bleach" in lowered and "ammonia" in lowered else 1.0


def main() -> None:
    guard = RainGuard(evaluator=unsafe_chemistry, replacement="[page withheld: unsafe advice]")
    guarded_search = guard.wrap_tool(search)
    chat = ChatRain(preset="fast", max_tokens=32, evaluator=unsafe_chemistry)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer using the search result."), ("human", "{result}\n\nQ: {question}")]
    )
    for topic in ("cleaning", "drains"):
        # What an agent executor sends: a tool call; the verdict rides along as the artifact.
        call = {"name": "search", "args": {"topic": topic}, "id": topic, "type": "tool_call"}
        message = guarded_search.invoke(call)
        print(f"tool[{topic}] -> {message.content!r} ({message.artifact['action']})")
        chain = (
            {"result": lambda _, text=message.content: text, "question": RunnablePassthrough()}
            | prompt
            | chat
            | StrOutputParser()
        )
        print("answer:", chain.invoke(f"How do I deal with {topic}?").strip(), "\n")


if __name__ == "__main__":
    main()
