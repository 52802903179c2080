"""The served generator, loaded once, and its siblings that judge with another template.

The server owns one model. A request may name a built-in evaluation template
(or hard/soft votes, one or two label orders) other than the one the served
generator judges with; its search then runs on a sibling generator that
shares the model, tokenizer, embedder and engine (so its searches share the
forward calls of every other request) and differs only in its judge. Only
built-in template names are accepted from a request: a file path from the
network would let a client read the server's files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from rain_integrations.server.errors import APIError, bad_request
from rain_search.evaluators import SelfEvaluator
from rain_search.heap import freeze_loaded_heap
from rain_search.search import RainGenerator
from rain_search.templates import builtin_names

GeneratorSource = RainGenerator | Callable[[], RainGenerator]
"""A ready generator, or a function that builds one (called once, on first need)."""

JudgeKey = tuple[str, str, bool]
"""(template name, votes, swap_labels): what tells two self-evaluating judges apart."""


class Generators:
    """Builds the served generator on first use (thread-safe) and keeps judge siblings."""

    def __init__(self, source: GeneratorSource, model_name: str | None = None) -> None:
        self._source = source
        self._model_name = model_name
        self._base: RainGenerator | None = source if isinstance(source, RainGenerator) else None
        self._siblings: dict[JudgeKey, RainGenerator] = {}
        self._lock = threading.Lock()
        self._heap_frozen = False

    @property
    def loaded(self) -> bool:
        return self._base is not None

    def base(self) -> RainGenerator:
        """The served generator; the first call builds it (it may load a model: seconds)."""
        with self._lock:
            if self._base is None:
                assert not isinstance(self._source, RainGenerator)
                self._base = self._source()
                if not isinstance(self._base, RainGenerator):
                    raise TypeError(
                        f"the generator factory returned {type(self._base).__name__}, "
                        "not a RainGenerator"
                    )
            if not self._heap_frozen:  # the model is in: keep full collections off it
                freeze_loaded_heap()
                self._heap_frozen = True
            return self._base

    @property
    def model_name(self) -> str:
        """The name clients send as ``model``: as configured, else the model's folder or id."""
        if self._model_name is not None:
            return self._model_name
        path = str(getattr(self.base().model, "name_or_path", "") or "rain")
        return Path(path).name or path

    def for_judge(
        self, template: str | None, votes: str | None, swap_labels: bool | None
    ) -> RainGenerator:
        """The generator whose judge reads ``template`` with these votes and label orders."""
        base = self.base()
        if template is None and votes is None and swap_labels is None:
            return base
        if not isinstance(base.evaluator, SelfEvaluator):
            judge = getattr(base.evaluator, "name", "its own evaluator")
            raise bad_request(
                f"this server judges with {judge}, so 'rain.template', 'rain.votes' and "
                "'rain.swap_labels' cannot change its judge; remove them",
                "rain.template" if template is not None else "rain.votes",
            )
        key = (
            self._template(template, base.evaluator.template.name),
            votes or base.config.votes,
            base.config.swap_labels if swap_labels is None else swap_labels,
        )
        if key == (base.evaluator.template.name, base.config.votes, base.config.swap_labels):
            return base
        with self._lock:
            if key not in self._siblings:
                self._siblings[key] = sibling(base, key)
            return self._siblings[key]

    @staticmethod
    def _template(name: str | None, default: str) -> str:
        if name is None:
            return default
        if name not in builtin_names():
            raise APIError(
                400,
                f"unknown template {name!r}; a request may name a built-in template: "
                f"{', '.join(builtin_names())}",
                param="rain.template",
                code="invalid_value",
            )
        return name


def sibling(base: RainGenerator, key: JudgeKey) -> RainGenerator:
    """A generator on ``base``'s model, embedder and engine whose self-evaluation uses ``key``.

    Sharing the engine puts the sibling's searches in the same forward calls as
    every other request's, whatever template each judges with.
    """
    template, votes, swap_labels = key
    return base.with_judge(template=template, votes=votes, swap_labels=swap_labels)
