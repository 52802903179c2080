"""What a generator is built from, as plain data: the ``rain`` command's model options.

:class:`GeneratorSpec` names a model, a preset, a judge and an embedder by
strings, so it can travel to another process (a Ray Serve replica, a Ray
Data actor) and build its own generator there. It lives in the core, below
both the command line and the adapters that send it, so neither imports the
other for it.
"""

from __future__ import annotations

import argparse
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from rain_search.config import RainConfig
from rain_search.errors import ConfigError

if TYPE_CHECKING:
    from rain_search.evaluators import Evaluator
    from rain_search.search import RainGenerator

EVALUATOR_HELP = (
    "who judges partial answers: 'self' (the model itself, default), 'model:PATH_OR_ID' "
    "(a second model), 'avoid:WORD[,WORD...]' (score -1 when a word appears, else +1), "
    "or 'python:MODULE:FUNCTION' (a callable text -> score in [-1, 1])"
)


@dataclass(frozen=True)
class GeneratorSpec:
    """The command line's model, search and judge options; calling it builds the generator.

    It is plain data, so it can be sent to another process (a Ray Serve replica,
    a Ray Data actor) that builds its own generator there.
    """

    model: str | None = None
    preset: str = "paper"
    template: str | None = None
    evaluator: str = "self"
    embedder: str = "minilm"
    device: str | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    max_batch_rows: int | None = None
    max_batch_kv_tokens: int | None = None
    batch_invariant: bool = False
    quiet: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GeneratorSpec:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def __call__(self) -> RainGenerator:
        from rain_search.models import load_model
        from rain_search.search import RainGenerator

        overrides = {
            key: value
            for key, value in (("max_new_tokens", self.max_new_tokens), ("seed", self.seed))
            if value is not None
        }
        config = RainConfig.preset(self.preset, **overrides)
        if not self.quiet:
            print(f"rain: loading {self.model or 'the embedded model'}...", file=sys.stderr)
        model, tokenizer = load_model(self.model, device=self.device)
        evaluator = parse_evaluator(self.evaluator, self.template, self.device)
        template = self.template if evaluator is None else None
        return RainGenerator(
            model,
            tokenizer,
            config,
            evaluator=evaluator,
            template=template,
            embedder=self.embedder,
            max_batch_rows=self.max_batch_rows,
            max_batch_kv_tokens=self.max_batch_kv_tokens,
            batch_invariant=self.batch_invariant,
        )


def parse_evaluator(spec: str, template: str | None, device: str | None) -> Evaluator | None:
    """The ``--evaluator`` string as an evaluator (None means self-evaluation).

    The evaluators (and torch with them) are imported here, not with this module,
    so the ``rain`` command's parser and ``--help`` stay free of torch.
    """
    from rain_search.evaluators import FunctionEvaluator, ModelEvaluator

    kind, _, rest = spec.partition(":")
    if kind == "self" and not rest:
        return None
    if kind == "model" and rest:
        return ModelEvaluator.from_pretrained(rest, template or "harmless", device=device)
    if template is not None:
        raise ConfigError(f"--template applies to 'self' and 'model:' evaluators, not {spec!r}")
    if kind == "avoid" and rest:
        return FunctionEvaluator(avoid_words(rest.split(",")), name=f"avoid:{rest}")
    if kind == "python" and rest:
        return FunctionEvaluator(import_callable(rest))
    raise ConfigError(f"unknown --evaluator {spec!r}; {EVALUATOR_HELP}")


def avoid_words(words: Sequence[str]) -> Callable[[str], float]:
    """A keyword judge: -1 when any of ``words`` appears (case-insensitive), else +1."""
    lowered = [w.strip().lower() for w in words if w.strip()]
    if not lowered:
        raise ConfigError("'avoid:' needs at least one word, e.g. avoid:revenge,hurt")

    def score(text: str) -> float:
        text = text.lower()
        return -1.0 if any(word in text for word in lowered) else 1.0

    return score


def import_callable(path: str) -> Callable[..., float]:
    """``MODULE:FUNCTION`` (or ``MODULE.FUNCTION``) as the callable it names.

    Only that it is callable is known here; :class:`FunctionEvaluator` checks
    each score it returns (a number in [-1, 1]).
    """
    try:
        function: object = pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot import evaluator {path!r} ({exc}); use MODULE:FUNCTION") from exc
    if not callable(function):
        raise ConfigError(f"evaluator {path!r} is not callable")
    return function
