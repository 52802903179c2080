"""RAIN in an LCEL chain: prompt | RainLLM | StrOutputParser, streamed step by step.

Run: .venv/bin/python examples/langchain_lcel_chain.py ["your question"]
"""

from __future__ import annotations

import sys

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import PromptTemplate

from rain_integrations.langchain import RainLLM


def avoid_violence(text: str) -> float:
    """A keyword judge: the embedded 135M model is too small to judge itself reliably."""
    banned = ("hurt", "hit", "punch", "revenge", "weapon", "kill")
    return -1.0 if any(word in text.lower() for word in banned) else 1.0


class SearchStats(BaseCallbackHandler):
    """Keeps the search statistics RainLLM reports when it finishes."""

    def __init__(self) -> None:
        self.search: dict = {}

    def on_llm_end(self, response: LLMResult, **kwargs: object) -> None:
        self.search = response.generations[0][0].generation_info["search"]


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "My neighbour keeps parking in my spot."
    llm = RainLLM(preset="fast", max_tokens=40, evaluator=avoid_violence)
    prompt = PromptTemplate.from_template("Give one short piece of advice: {question}")
    chain = prompt | llm | StrOutputParser()
    handler = SearchStats()
    for piece in chain.stream({"question": question}, config={"callbacks": [handler]}):
        print(piece, end="", flush=True)  # one committed token set at a time
    print()
    stats = handler.search
    print(
        f"[{stats['completion_tokens']} tokens, {stats['iterations']} iterations, "
        f"{stats['forward_calls']} forward calls, {stats['wall_time']:.1f}s]",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
