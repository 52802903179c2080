"""``RainGuard``: a Runnable that judges text (e.g. an agent's tool output) and acts on it.

The judge is the same as the search's: an evaluation template read by the
model itself, a second model, or any scoring function. Text scoring below
``threshold`` is annotated, replaced, or rewritten by a RAIN generation,
whichever ``policy`` says; good text passes through unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import ConfigDict, Field, model_validator

from rain_search.errors import ConfigError, PromptError
from rain_search.evaluators import Evaluator, check_score, make_evaluator

Policy = Literal["annotate", "replace", "regenerate"]


class RainGuard(RunnableSerializable[Any, Any]):
    """Judge text and pass, replace or regenerate it.

    Input: a string, a message (e.g. a ``ToolMessage``), or a dict with
    ``text`` and optionally ``prompt`` (what the text answers). The output has
    the input's type; messages get ``response_metadata["rain_guard"]`` with
    the score and the action taken.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: Any = Field(
        default=None, description="A RainLLM or ChatRain: its model judges and regenerates."
    )
    evaluator: Any = Field(
        default=None, description="A judge to use instead of the llm's: Evaluator or callable."
    )
    policy: Policy = "replace"
    threshold: float = Field(0.0, ge=-1.0, le=1.0, description="Scores below this are bad.")
    context: str = Field(
        "", description="What the text answers, shown to the judge when the input has no prompt."
    )
    replacement: str = "[withheld: the content was judged unsafe]"
    rewrite_prompt: str = (
        "Rewrite the following text so that it is safe and respectful, keeping any useful, "
        "harmless information:\n\n{text}"
    )

    @model_validator(mode="after")
    def _has_a_judge(self) -> RainGuard:
        if self.llm is None and self.evaluator is None:
            raise ConfigError("RainGuard needs llm= (to judge with its model) or evaluator=")
        if self.policy == "regenerate" and self.llm is None:
            raise ConfigError("policy='regenerate' needs llm= to write the new text")
        if "{text}" not in self.rewrite_prompt:
            raise ConfigError("rewrite_prompt must contain the placeholder {text}")
        return self

    def judge(self) -> Evaluator:
        if self.evaluator is not None:
            return make_evaluator(self.evaluator, None)
        return self.llm.rain.evaluator

    def score(self, text: str, prompt: str | None = None) -> float:
        """The judge's score of ``text`` in [-1, 1]."""
        value = self.judge().score(prompt if prompt is not None else self.context, [text])[0]
        return check_score(value, "the guard's evaluator")

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._guard, input, config, **kwargs)

    def _guard(self, input: Any) -> Any:
        text, prompt = _text_and_prompt(input)
        score = self.score(text, prompt)
        action, output = "pass", text
        if score < self.threshold:
            action, output = self._act(text, prompt)
        return _like(input, output, {"score": score, "action": action})

    def _act(self, text: str, prompt: str | None) -> tuple[str, str]:
        if self.policy == "annotate":
            return "annotate", text
        if self.policy == "regenerate":
            rewritten = self._rewrite(text)
            if self.score(rewritten, prompt) >= self.threshold:
                return "regenerate", rewritten
        return "replace", self.replacement

    def _rewrite(self, text: str) -> str:
        """The rewrite prompt answered with RAIN; the flagged text in it stays text."""
        stream = self.llm.rain.stream(self.rewrite_prompt.replace("{text}", text))
        for _ in stream:
            pass
        assert stream.result is not None  # set when the stream is exhausted
        return stream.result.text

    def wrap_tool(self, tool: BaseTool) -> BaseTool:
        """The same tool, its output passed through this guard before the agent sees it.

        The agent reads the guarded text; the verdict (score and action) is the
        tool message's ``artifact`` when the tool is called with a tool call.
        """

        def guarded(**kwargs: Any) -> tuple[str, dict[str, Any]]:
            checked = self.invoke(
                {"text": _as_text(tool.invoke(kwargs)), "prompt": tool.description}
            )
            return checked["text"], checked["rain_guard"]

        return StructuredTool.from_function(
            func=guarded,
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            response_format="content_and_artifact",
        )


def _text_and_prompt(input: Any) -> tuple[str, str | None]:
    if isinstance(input, str):
        return input, None
    if isinstance(input, BaseMessage):
        return input.text, None
    if isinstance(input, dict) and isinstance(input.get("text"), str):
        return input["text"], input.get("prompt")
    raise PromptError(
        f"RainGuard takes a string, a message or a dict with 'text', got {type(input).__name__}"
    )


def _like(input: Any, text: str, verdict: dict[str, Any]) -> Any:
    """``text`` in the shape of ``input``, with the verdict attached where there is room."""
    if isinstance(input, str):
        return text
    if isinstance(input, BaseMessage):
        metadata = {**input.response_metadata, "rain_guard": verdict}
        return input.model_copy(update={"content": text, "response_metadata": metadata})
    return {**input, "text": text, "rain_guard": verdict}


def _as_text(output: Any) -> str:
    return output.text if isinstance(output, BaseMessage) else str(output)
