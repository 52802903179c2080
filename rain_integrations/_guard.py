"""Judging one piece of text and acting on the verdict, for every adapter's guard.

The LangChain guard (a Runnable and an agent middleware) and the LlamaIndex
guards (agent tools, retrieved chunks) all decide the same way, so the
decision lives here, free of either framework: score the text with a judge,
and below ``threshold`` annotate it, replace it, have RAIN rewrite it, or
block it (raise :class:`GuardViolation`). Every decision is logged and handed
to :meth:`GuardSettings.emit`, which each framework's guard overrides to put it
on its own event stream (LangChain callbacks, LlamaIndex's dispatcher).
Async callers get the same decisions without blocking their event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rain_integrations._judge import Judge, JudgeSpec, make_judge
from rain_integrations._options import refuse_unknown
from rain_integrations._params import RainParams
from rain_search.errors import ConfigError, RainError

if TYPE_CHECKING:
    from rain_search.search import RainStream

Policy = Literal["annotate", "replace", "regenerate", "block"]
Action = Literal["pass", "annotate", "replace", "regenerate", "block", "drop"]

logger = logging.getLogger("rain_integrations.guard")


class Verdict(TypedDict):
    """What the guard decided: the judge's score and what it did with the text."""

    score: float
    action: Action


class Decision(TypedDict):
    """A verdict with what was judged, as logged and emitted (never the text itself, so an
    event stream cannot leak what the guard withheld)."""

    guard: str
    subject: str
    score: float
    threshold: float
    action: Action


class GuardViolation(RainError):
    """Text judged bad under ``policy='block'``: the run stops here.

    ``subject`` says what was judged (``"tool result of 'search'"``, ``"the model's
    answer"``...); the text itself is left out of the message, which may be shown or logged.
    """

    def __init__(self, subject: str, score: float, threshold: float) -> None:
        super().__init__(
            f"the RAIN guard blocked {subject}: its score {score:.3f} is below the "
            f"threshold {threshold}"
        )
        self.subject, self.score, self.threshold = subject, score, threshold

    def __reduce__(self) -> tuple[type[GuardViolation], tuple[str, float, float]]:
        return type(self), (self.subject, self.score, self.threshold)


class GuardSettings(BaseModel):
    """Who judges, what counts as bad, and what happens to bad text.

    Options are keyword-only and checked by name: a misspelt one raises
    :class:`~rain_integrations._options.UnknownOption` naming the valid ones.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    llm: RainParams | None = Field(
        default=None,
        description="A RAIN model of either adapter (RainLLM, ChatRain, Rain): its judge "
        "scores the text and, under policy='regenerate', its search rewrites it.",
    )
    evaluator: JudgeSpec | None = Field(
        default=None,
        description="A judge to use instead of the llm's: an Evaluator, a function "
        "(text) or (prompt, text) -> score, an async function, or a Runnable taking "
        "{'prompt', 'text'} and returning a score.",
    )
    aevaluator: Callable[..., Awaitable[object]] | None = Field(
        default=None,
        description="The async twin of a sync evaluator=, used under ainvoke/acheck.",
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

    def __init__(self, **options: Any) -> None:
        refuse_unknown(type(self).__name__, options, _field_names(type(self)))
        super().__init__(**options)

    @field_validator("llm", mode="before")
    @classmethod
    def _a_rain_model(cls, value: object) -> object:
        """A LangChain or LlamaIndex model of another kind has no RAIN judge or search:
        refuse it now rather than fail later inside the guard."""
        if value is None or isinstance(value, RainParams):
            return value
        raise ConfigError(
            f"llm= takes a RAIN model (RainLLM, ChatRain or LlamaIndex's Rain), got "
            f"{type(value).__name__}; to judge with another model, pass it as evaluator= "
            "(a Runnable taking {'prompt', 'text'} and returning a score)"
        )

    @field_validator("evaluator", "aevaluator", mode="before")
    @classmethod
    def _a_known_judge(cls, value: object, info: ValidationInfo) -> object:
        """A judge of an unknown kind is refused with the kinds there are, before pydantic's
        own type error (which would list its schema instead)."""
        if value is not None and info.field_name == "evaluator":
            make_judge(value, None)
        elif value is not None:
            make_judge(None, value)
        return value

    @model_validator(mode="after")
    def _has_a_judge(self) -> GuardSettings:
        if self.llm is None and self.evaluator is None and self.aevaluator is None:
            raise ConfigError(
                f"{type(self).__name__} needs llm= (to judge with its model) or evaluator="
            )
        if self.policy == "regenerate" and self.llm is None:
            raise ConfigError("policy='regenerate' needs llm= to write the new text")
        if "{text}" not in self.rewrite_prompt:
            raise ConfigError("rewrite_prompt must contain the placeholder {text}")
        if self.evaluator is not None and self.aevaluator is not None:
            self.judge()  # a pair must be a sync function and an async one
        return self

    def judge(self) -> Judge:
        """The judge as a sync/async pair (see :func:`~rain_integrations._judge.make_judge`)."""
        if self.evaluator is None and self.aevaluator is None:
            assert self.llm is not None  # _has_a_judge: one of the three is given
            return make_judge(self.llm.rain.evaluator, None)  # loads the llm's model
        return make_judge(self.evaluator, self.aevaluator)

    @property
    def judge_name(self) -> str:
        """The judge's name, for decisions and for telling two guards apart."""
        if self.evaluator is None and self.aevaluator is None and self.llm is not None:
            return f"{type(self.llm).__name__}'s judge"
        return self.judge().name

    def score(self, text: str, prompt: str | None = None) -> float:
        """The judge's score of ``text`` as an answer to ``prompt``, in [-1, 1]."""
        return self.judge().score(self._prompt(prompt), text)

    async def ascore(self, text: str, prompt: str | None = None) -> float:
        return await self.judge().ascore(self._prompt(prompt), text)

    def _prompt(self, prompt: str | None) -> str:
        return prompt if prompt is not None else self.context

    # -- deciding --------------------------------------------------------------------

    def check(
        self, text: str, prompt: str | None = None, subject: str = "text"
    ) -> tuple[str, Verdict]:
        """The text to show instead of ``text`` (itself when it passes), and the verdict.

        Raises :class:`GuardViolation` when bad text meets ``policy='block'``.
        """
        shown, verdict = self.judged(text, prompt)
        self.record(subject, verdict)
        return shown, verdict

    async def acheck(
        self, text: str, prompt: str | None = None, subject: str = "text"
    ) -> tuple[str, Verdict]:
        """:meth:`check` without blocking the event loop: a sync judge runs in a worker
        thread, and a rewrite is a RAIN stream that cancelling the task stops."""
        shown, verdict = await self.ajudged(text, prompt)
        await self.arecord(subject, verdict)
        return shown, verdict

    def judged(self, text: str, prompt: str | None = None) -> tuple[str, Verdict]:
        """:meth:`check` without recording the decision (the caller records it)."""
        score = self.score(text, prompt)
        if score >= self.threshold or self.policy != "regenerate":
            return self._decide(text, score)
        rewritten = self._rewrite_sync(text)
        return self._decide(text, score, rewritten, self.score(rewritten, prompt))

    async def ajudged(self, text: str, prompt: str | None = None) -> tuple[str, Verdict]:
        score = await self.ascore(text, prompt)
        if score >= self.threshold or self.policy != "regenerate":
            return self._decide(text, score)
        stream = self._rewrite_stream(text)
        async for _ in stream:
            pass
        assert stream.result is not None
        rewritten = stream.result.text
        return self._decide(text, score, rewritten, await self.ascore(rewritten, prompt))

    def _decide(
        self, text: str, score: float, rewritten: str | None = None, new_score: float = -1.0
    ) -> tuple[str, Verdict]:
        if score >= self.threshold:
            return text, Verdict(score=score, action="pass")
        if self.policy in ("annotate", "block"):
            return text, Verdict(score=score, action=self.policy)
        if rewritten is not None and new_score >= self.threshold:
            return rewritten, Verdict(score=score, action="regenerate")
        return self.replacement, Verdict(score=score, action="replace")

    # -- recording -------------------------------------------------------------------

    def decision(self, subject: str, verdict: Verdict) -> Decision:
        return Decision(
            guard=self.judge_name,
            subject=subject,
            score=verdict["score"],
            threshold=self.threshold,
            action=verdict["action"],
        )

    def record(self, subject: str, verdict: Verdict) -> None:
        """Log the decision, emit it, and raise :class:`GuardViolation` if it blocks."""
        decision = self.decision(subject, verdict)
        log(decision)
        self.emit(decision)
        raise_if_blocked(decision)

    async def arecord(self, subject: str, verdict: Verdict) -> None:
        decision = self.decision(subject, verdict)
        log(decision)
        await self.aemit(decision)
        raise_if_blocked(decision)

    def emit(self, decision: Decision) -> None:
        """Tell the framework's observers (overridden by each adapter's guard)."""

    async def aemit(self, decision: Decision) -> None:
        self.emit(decision)

    # -- rewriting -------------------------------------------------------------------

    def _rewrite_stream(self, text: str) -> RainStream:
        """The rewrite prompt answered with RAIN; the flagged text in it stays text."""
        assert self.llm is not None  # _has_a_judge: regenerate needs llm=
        return self.llm.rain.stream(self.rewrite_prompt.replace("{text}", text))

    def _rewrite_sync(self, text: str) -> str:
        stream = self._rewrite_stream(text)
        for _ in stream:
            pass
        assert stream.result is not None  # set when the stream is exhausted
        return stream.result.text


def log(decision: Decision) -> None:
    """Every decision goes to the ``rain_integrations.guard`` logger: passes at DEBUG,
    the rest at INFO (WARNING for a block)."""
    level = {"pass": logging.DEBUG, "block": logging.WARNING}.get(decision["action"], logging.INFO)
    logger.log(
        level,
        "%s on %s: score %.3f (threshold %s) -> %s",
        decision["guard"],
        decision["subject"],
        decision["score"],
        decision["threshold"],
        decision["action"],
    )


def raise_if_blocked(decision: Decision) -> None:
    if decision["action"] == "block":
        raise GuardViolation(decision["subject"], decision["score"], decision["threshold"])


def _field_names(model: type[BaseModel]) -> list[str]:
    """The keywords a pydantic model takes: its field names and their aliases."""
    names = set(model.model_fields)
    names |= {f.alias for f in model.model_fields.values() if f.alias}
    return sorted(names)
