"""Sampling settings users bring from ``generate`` that RAIN's search has no use for.

RAIN proposes candidates from the ``top_k`` most likely tokens at a
``temperature`` and lets the judge choose among them, so nucleus sampling,
repetition penalties and beams have nothing to act on. Passing one is an error
that says so, rather than a setting silently ignored; a model whose own
``generation_config`` asks for one gets a warning, once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from rain_search.errors import ConfigError

logger = logging.getLogger(__name__)

UNSUPPORTED = {
    "top_p": "candidates come from the top_k most likely tokens; use top_k",
    "min_p": "candidates come from the top_k most likely tokens; use top_k",
    "typical_p": "candidates come from the top_k most likely tokens; use top_k",
    "repetition_penalty": "the judge, not a penalty, steers the answer; use an evaluator",
    "presence_penalty": "the judge, not a penalty, steers the answer; use an evaluator",
    "frequency_penalty": "the judge, not a penalty, steers the answer; use an evaluator",
    "no_repeat_ngram_size": "the judge, not a penalty, steers the answer; use an evaluator",
    "num_beams": "the tree search replaces beam search; use max_iterations or num_children",
    "do_sample": "candidates are always sampled (temperature 0 picks greedily)",
}
"""Names from ``generate`` with no RAIN counterpart, and what to use instead."""


def refuse_unsupported(names: Iterable[str]) -> None:
    """A :class:`ConfigError` for the first name RAIN cannot apply, saying what to use."""
    for name in names:
        if name in UNSUPPORTED:
            raise ConfigError(
                f"{name} is not supported by RAIN's tree search: {UNSUPPORTED[name]} "
                "(RainConfig fields: top_k, temperature, rollout_temperature, ...)"
            )


def note_model_defaults(generation_config: Any) -> list[str]:
    """Sampling settings in a model's own generation config that RAIN will not apply.

    Logged once per generator, so a user who relies on them learns why the
    answer differs from ``model.generate``'s.
    """
    neutral = {"top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0, "min_p": None}
    ignored = [
        f"{name}={value!r}"
        for name, off in neutral.items()
        if (value := getattr(generation_config, name, None)) is not None and value != off
    ]
    if ignored:
        logger.warning(
            "rain: the model's generation_config sets %s; RAIN's search does not apply "
            "these (its sampling is RainConfig's top_k and temperature)",
            ", ".join(ignored),
        )
    return ignored
