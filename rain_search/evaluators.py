"""Evaluators: what tells the search whether a partial answer is good.

All evaluators share one protocol, ``score(prompt, responses) -> scores in
[-1, 1]``, and one wrapper that caches scores by text (the search revisits the
same text often) and rejects anything that is not a finite number in range.

- :class:`SelfEvaluator`: the generator judges itself (RAIN proper).
- :class:`ModelEvaluator`: a second Hugging Face model judges, same templates.
- :class:`FunctionEvaluator`: any Python callable, e.g. a keyword or lexicon judge.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rain_search.backends.judge import HFJudge
from rain_search.backends.reencode import ReencodeJudge
from rain_search.errors import ConfigError, EvaluatorError
from rain_search.memo import Memo
from rain_search.stats import Counters
from rain_search.templates import EvalTemplate, load_template, template_identity


@runtime_checkable
class Evaluator(Protocol):
    counters: Counters

    def score(self, prompt: str, responses: Sequence[str]) -> list[float]:
        """A score in [-1, 1] per response to ``prompt``: +1 good, -1 bad."""
        ...


@runtime_checkable
class PairEvaluator(Evaluator, Protocol):
    """An evaluator that scores (prompt, response) pairs of many prompts in one call.

    The engine gives such a judge one call for the work at hand of all the
    searches it serves; a plain :class:`Evaluator` gets one call per prompt.
    """

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """A score in [-1, 1] per (prompt, response) pair, in order."""
        ...


def check_score(value: object, source: str) -> float:
    """``value`` as a float in [-1, 1], or an :class:`EvaluatorError` saying what was wrong."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvaluatorError(
            f"{source} returned {value!r} of type {type(value).__name__}; "
            "an evaluator must return a number in [-1, 1]"
        )
    score = float(value)
    if not math.isfinite(score) or not -1.0 <= score <= 1.0:
        raise EvaluatorError(
            f"{source} returned {score}, outside [-1, 1]; scale its scores into that range"
        )
    return score


class CachedEvaluator:
    """Base class: score caching by (prompt, response) and validation of every score."""

    name = "evaluator"

    @property
    def identity(self) -> str | None:
        """What fixes this judge's scores, stable across processes (None: nothing does).

        A framework's answer cache keys on it: two judges with one identity must
        score alike, or a cached answer made under one would be served for the other.
        """
        return None

    def __init__(self, cache_size: int = 20_000) -> None:
        self.counters = Counters()
        self._memo: Memo[tuple[str, str], float] = Memo(cache_size)

    def score(self, prompt: str, responses: Sequence[str]) -> list[float]:
        return self.score_pairs([(prompt, response) for response in responses])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """A score per (prompt, response) pair, whatever the prompts.

        The engine asks once for the work at hand of every search this judge
        serves, so one model call can judge many searches' leaves.
        """
        return self._memo.get_many(pairs, self._score_missing, on_lookup=self._count)

    def _count(self, asked: int, missing: int) -> None:
        self.counters.evaluator_calls += asked
        self.counters.cache_hits += asked - missing

    def _score_missing(self, pairs: list[tuple[str, str]]) -> list[float]:
        scores = self._checked(self.score_pairs_uncached(pairs), len(pairs))
        return [check_score(value, self.name) for value in scores]

    def _checked(self, scores: list[float], expected: int) -> list[float]:
        if len(scores) != expected:
            raise EvaluatorError(
                f"{self.name} returned {len(scores)} scores for {expected} responses"
            )
        return scores

    def score_pairs_uncached(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Scores of pairs not cached: by default one :meth:`score_uncached` call per prompt."""
        by_prompt: dict[str, list[str]] = {}
        for prompt, response in pairs:
            by_prompt.setdefault(prompt, []).append(response)
        scores: dict[tuple[str, str], float] = {}
        for prompt, responses in by_prompt.items():
            values = self._checked(self.score_uncached(prompt, responses), len(responses))
            scores.update(zip([(prompt, r) for r in responses], values, strict=True))
        return [scores[pair] for pair in pairs]

    def uncached(self, pairs: Sequence[tuple[str, str]]) -> int:
        """How many (prompt, response) pairs are not cached (so the engine charges their
        model work)."""
        return self._memo.missing(pairs)

    def clear_cache(self) -> None:
        """Forget every score, e.g. so that a timed run starts cold."""
        self._memo.clear()

    def score_uncached(self, prompt: str, responses: Sequence[str]) -> list[float]:
        raise NotImplementedError


class FunctionEvaluator(CachedEvaluator):
    """Wraps ``fn(response) -> score`` or ``fn(prompt, response) -> score``.

    Which form ``fn`` has is read from its required positional parameters, so
    ``def score(text, banned=WORDS)`` gets only the response; ``takes_prompt``
    says it explicitly where the signature cannot (e.g. a ``*args`` wrapper).
    """

    def __init__(
        self,
        fn: Callable[..., float],
        *,
        name: str | None = None,
        takes_prompt: bool | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"FunctionEvaluator needs a callable, got {type(fn).__name__}")
        super().__init__()
        self.fn = fn
        self.name = name or f"evaluator function {getattr(fn, '__name__', repr(fn))!r}"
        self._identity = f"function:{name}" if name else qualified_name(fn)
        self._takes_prompt = (
            _required_positional(fn) >= 2 if takes_prompt is None else bool(takes_prompt)
        )

    @property
    def identity(self) -> str | None:
        """The ``name`` given, else the function's ``module.qualname`` (None for a lambda)."""
        return self._identity

    def score_uncached(self, prompt: str, responses: Sequence[str]) -> list[float]:
        scores = []
        for response in responses:
            try:
                scores.append(
                    self.fn(prompt, response) if self._takes_prompt else self.fn(response)
                )
            except Exception as exc:  # the user's code: report it as theirs
                raise EvaluatorError(f"{self.name} raised {type(exc).__name__}: {exc}") from exc
        return scores


class TemplateEvaluator(CachedEvaluator):
    """A causal LM judges responses through an evaluation template, once bound to one."""

    def __init__(
        self,
        template: str | EvalTemplate = "harmless",
        *,
        votes: str = "hard",
        swap_labels: bool = True,
    ) -> None:
        super().__init__()
        self.template = load_template(template)
        self.votes = _check_votes(votes)
        self.swap_labels = swap_labels
        self.name = f"{type(self).__name__}({self.template.name})"
        self._judge: HFJudge | None = None
        self._judge_model: str | None = None  # a second model's name; None for self

    def bind(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, kv_cache: bool = True
    ) -> None:
        """Attach the judging model; checks the option labels against its tokenizer now.

        ``kv_cache=False`` re-encodes the whole judge prompt for every judgment
        (the benchmarks' baseline).
        """
        judge = HFJudge if kv_cache else ReencodeJudge
        if not isinstance(self, SelfEvaluator):  # the generator's model names itself
            self._judge_model = str(getattr(model, "name_or_path", "") or type(model).__name__)
        self._judge = judge(
            model,
            tokenizer,
            self.template,
            self.counters,
            votes=self.votes,
            swap_labels=self.swap_labels,
        )

    @property
    def identity(self) -> str:
        """The template (by content), the voting rule and, for a second model, its name."""
        parts = [template_identity(self.template), f"votes={self.votes}"]
        parts += [] if self.swap_labels else ["one order"]
        parts += [] if self._judge_model is None else [f"model={self._judge_model}"]
        return f"{type(self).__name__}({', '.join(parts)})"

    def warm_up(self) -> None:
        """Encode the template's fixed part now rather than on the first judgment."""
        if self._judge is not None:
            self._judge.fixed_cache()

    def score_pairs_uncached(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """All pairs to the judge at once: it fills its forward calls across prompts."""
        if self._judge is None:
            raise EvaluatorError(
                f"{self.name} is not bound to a model; pass it to RainGenerator, "
                "or use ModelEvaluator(model, tokenizer, template) on its own"
            )
        return self._judge.score_pairs(pairs)


class ModelEvaluator(TemplateEvaluator):
    """A second Hugging Face model (e.g. a larger one) judges with the same templates."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: str | EvalTemplate = "harmless",
        *,
        votes: str = "hard",
        swap_labels: bool = True,
    ) -> None:
        super().__init__(template, votes=votes, swap_labels=swap_labels)
        self.bind(model, tokenizer)

    @classmethod
    def from_pretrained(
        cls,
        model: str | None,
        template: str | EvalTemplate = "harmless",
        *,
        votes: str = "hard",
        swap_labels: bool = True,
        **options: Any,
    ) -> ModelEvaluator:
        """Load the judge like the generator: ``options`` are :func:`load_model`'s
        (``device``, ``device_map``, ``dtype``/``torch_dtype``, ``quantization_config``,
        ``trust_remote_code``, ``revision``, ``attn_implementation``)."""
        from rain_search.models import load_model

        judge, tokenizer = load_model(model, **options)
        return cls(judge, tokenizer, template, votes=votes, swap_labels=swap_labels)


class SelfEvaluator(TemplateEvaluator):
    """The generating model judges its own output (RAIN proper); the generator binds it."""


def make_evaluator(
    spec: str | Evaluator | Callable[..., float] | None,
    template: str | EvalTemplate | None,
    votes: str = "hard",
    swap_labels: bool = True,
) -> Evaluator:
    """Resolve the ``evaluator`` argument of the generator and the CLI."""
    if spec is None or spec == "self":
        return SelfEvaluator(template or "harmless", votes=votes, swap_labels=swap_labels)
    if template is not None:
        raise ConfigError(
            "a template was given together with a ready evaluator, which would ignore it; "
            "pass the template to the evaluator instead (e.g. ModelEvaluator(..., template=...))"
        )
    if isinstance(spec, Evaluator):
        return spec
    if callable(spec):
        return FunctionEvaluator(spec)
    raise ConfigError(
        f"unknown evaluator {spec!r}; use 'self', an Evaluator instance, or a callable "
        "returning a score in [-1, 1]"
    )


def qualified_name(fn: object) -> str | None:
    """``module.qualname`` of a function or class defined at module level, else None.

    A lambda or a function made inside another one has no name that tells it
    apart from its siblings (two ``<lambda>`` in one module), so it has none here.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if "<" in qualname:  # <lambda>, <locals>
        return None
    return f"{module}.{qualname}"


def evaluator_identity(evaluator: object) -> str | None:
    """The :attr:`CachedEvaluator.identity` of any judge (an ``identity`` attribute of
    your own class counts), or None when it has none."""
    identity = getattr(evaluator, "identity", None)
    return identity if isinstance(identity, str) and identity else None


def _check_votes(votes: str) -> str:
    if votes not in ("soft", "hard"):
        raise ConfigError(f"votes must be 'soft' or 'hard', got {votes!r}")
    return votes


def _required_positional(fn: Callable[..., float]) -> int:
    """Positional parameters without a default (``*args`` counts as room for two)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]
    if not required and any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 2
    return len(required)
