"""Judging one piece of text and acting on the verdict, for every adapter's guard.

The LangChain guard (a Runnable and an agent middleware) and the LlamaIndex
guards (agent tools, retrieved chunks) all decide the same way, so the
decision lives here, free of either framework: score the text with a RAIN
judge, and below ``threshold`` annotate it, replace it, or have RAIN rewrite it.
Async callers get the same decisions without blocking their event loop: the
judge's forward calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rain_search.errors import ConfigError
from rain_search.evaluators import Evaluator, check_score, make_evaluator

if TYPE_CHECKING:
    from rain_integrations._params import RainParams
    from rain_search.search import RainStream

Policy = Literal["annotate", "replace", "regenerate"]
Action = Literal["pass", "annotate", "replace", "regenerate"]


class Verdict(TypedDict):
    """What the guard decided: the judge's score and what it did with the text."""

    score: float
    action: Action


class GuardSettings(BaseModel):
    """Who judges, what counts as bad, and what happens to bad text."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: Any = Field(
        default=None,
        description="A RAIN model of either adapter (RainLLM, ChatRain, Rain): its judge "
        "scores the text and, under policy='regenerate', its search rewrites it.",
    )
    evaluator: Any = Field(
        default=None, description="A judge to use instead of the llm's: Evaluator or callable."
    )
    policy: Policy = "replace"
    threshold: float = Field(0.0, ge=-1.0, le=1.0, description="Scores below this are bad.")
    context: str = Field(
        "", description="What the text answers, shown to the judge when no question is known."
    )
    replacement: str = "[withheld: the content was judged unsafe]"
    rewrite_prompt: str = (
        "Rewrite the following text so that it is safe and respectful, keeping any useful, "
        "harmless information:\n\n{text}"
    )

    @model_validator(mode="after")
    def _has_a_judge(self) -> GuardSettings:
        if self.llm is None and self.evaluator is None:
            raise ConfigError(
                f"{type(self).__name__} needs llm= (to judge with its model) or evaluator="
            )
        if self.policy == "regenerate" and self.llm is None:
            raise ConfigError("policy='regenerate' needs llm= to write the new text")
        if "{text}" not in self.rewrite_prompt:
            raise ConfigError("rewrite_prompt must contain the placeholder {text}")
        return self

    def judge(self) -> Evaluator:
        if self.evaluator is not None:
            return make_evaluator(self.evaluator, None)
        model: RainParams = self.llm
        return model.rain.evaluator

    def score(self, text: str, prompt: str | None = None) -> float:
        """The judge's score of ``text`` as an answer to ``prompt``, in [-1, 1]."""
        value = self.judge().score(prompt if prompt is not None else self.context, [text])[0]
        return check_score(value, "the guard's evaluator")

    def check(self, text: str, prompt: str | None = None) -> tuple[str, Verdict]:
        """The text to show instead of ``text`` (itself when it passes), and the verdict."""
        score = self.score(text, prompt)
        if score >= self.threshold or self.policy != "regenerate":
            return self._decide(text, score)
        rewritten = self._rewrite_sync(text)
        return self._decide(text, score, rewritten, self.score(rewritten, prompt))

    async def acheck(self, text: str, prompt: str | None = None) -> tuple[str, Verdict]:
        """:meth:`check` without blocking the event loop: the judge's forward calls run in
        a worker thread, and a rewrite is a RAIN stream that cancelling the task stops."""
        score = await asyncio.to_thread(self.score, text, prompt)
        if score >= self.threshold or self.policy != "regenerate":
            return self._decide(text, score)
        stream = self._rewrite_stream(text)
        async for _ in stream:
            pass
        assert stream.result is not None
        rewritten = stream.result.text
        return self._decide(
            text, score, rewritten, await asyncio.to_thread(self.score, rewritten, prompt)
        )

    def _decide(
        self, text: str, score: float, rewritten: str | None = None, new_score: float = -1.0
    ) -> tuple[str, Verdict]:
        if score >= self.threshold:
            return text, Verdict(score=score, action="pass")
        if self.policy == "annotate":
            return text, Verdict(score=score, action="annotate")
        if rewritten is not None and new_score >= self.threshold:
            return rewritten, Verdict(score=score, action="regenerate")
        return self.replacement, Verdict(score=score, action="replace")

    def _rewrite_stream(self, text: str) -> RainStream:
        """The rewrite prompt answered with RAIN; the flagged text in it stays text."""
        model: RainParams = self.llm
        return model.rain.stream(self.rewrite_prompt.replace("{text}", text))

    def _rewrite_sync(self, text: str) -> str:
        stream = self._rewrite_stream(text)
        for _ in stream:
            pass
        assert stream.result is not None  # set when the stream is exhausted
        return stream.result.text
