"""Sampling settings users bring from ``generate`` that RAIN's search has no use for.

RAIN proposes candidates from the ``top_k`` most likely tokens at a
``temperature`` and lets the judge choose among them, so nucleus sampling,
repetition penalties and beams have nothing to act on. Passing one is an error
that says so, rather than a setting silently ignored; a model whose own
``generation_config`` asks for one gets a warning, once.

:data:`UNSUPPORTED` is the one table of them: the keywords of
:class:`~rain_search.RainGenerator` and the adapters are refused by name, and
``model.generate(custom_generate=rain_generate)`` refuses a ``GenerationConfig``
that sets one to anything but its neutral value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rain_search.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unsupported:
    """One setting RAIN cannot apply: what to use instead, and its value that means "off"."""

    instead: str
    off: object = None
    """The neutral value (``None``, unset, is always neutral)."""
    cut_off: bool = False
    """A probability cut-off: any value at or above ``off`` (1.0) keeps every token."""
    sampling_only: bool = False
    """``generate`` applies it only when sampling (``do_sample``)."""
    keyword_only: bool = False
    """Refused as a keyword; a ``GenerationConfig`` carries it for ``generate``'s own use."""

    def asks(self, value: object) -> bool:
        """Whether ``value`` asks for something (not unset and not the neutral value)."""
        if value is None or value == self.off:
            return False
        if self.cut_off and isinstance(value, int | float) and isinstance(self.off, float):
            return value < self.off
        return True


TOP_K = "candidates come from the top_k most likely tokens; use top_k"
JUDGE = "the judge, not a penalty, steers the answer; use an evaluator"
TREE = "the tree search replaces beam search; use max_iterations or num_children"
ONE = "RAIN gives one answer per prompt; call it again (with another seed) for more"
INPUTS = "RAIN builds its own inputs and judges the answer as text; leave it unset"
OUTPUTS = "RAIN returns the answer and its search statistics (rain_results), not these"

UNSUPPORTED: dict[str, Unsupported] = {
    "top_p": Unsupported(TOP_K, 1.0, cut_off=True, sampling_only=True),
    "min_p": Unsupported(TOP_K, sampling_only=True),
    "typical_p": Unsupported(TOP_K, 1.0, cut_off=True, sampling_only=True),
    "epsilon_cutoff": Unsupported(TOP_K, 0.0),
    "eta_cutoff": Unsupported(TOP_K, 0.0),
    "repetition_penalty": Unsupported(JUDGE, 1.0),
    "encoder_repetition_penalty": Unsupported(JUDGE, 1.0),
    "presence_penalty": Unsupported(JUDGE, 0.0),
    "frequency_penalty": Unsupported(JUDGE, 0.0),
    "no_repeat_ngram_size": Unsupported(JUDGE, 0),
    "num_beams": Unsupported(TREE, 1),
    "num_beam_groups": Unsupported(TREE, 1),
    "penalty_alpha": Unsupported(TREE),
    "do_sample": Unsupported(
        "candidates are always sampled (temperature 0 picks greedily)", keyword_only=True
    ),
    "num_return_sequences": Unsupported(ONE, 1),
    "bad_words_ids": Unsupported(JUDGE),
    "sequence_bias": Unsupported(JUDGE),
    "min_length": Unsupported(INPUTS, 0),
    "min_new_tokens": Unsupported(INPUTS),
    "guidance_scale": Unsupported(INPUTS),
    "suppress_tokens": Unsupported(INPUTS),
    "begin_suppress_tokens": Unsupported(INPUTS),
    "forced_bos_token_id": Unsupported(INPUTS),
    "forced_eos_token_id": Unsupported(INPUTS),
    "watermarking_config": Unsupported(INPUTS),
    "output_scores": Unsupported(OUTPUTS, False),
    "output_logits": Unsupported(OUTPUTS, False),
    "output_attentions": Unsupported(OUTPUTS, False),
    "output_hidden_states": Unsupported(OUTPUTS, False),
}
"""Names from ``generate`` (and OpenAI's penalties) with no RAIN counterpart."""


def refuse_unsupported(names: Iterable[str]) -> None:
    """A :class:`ConfigError` for the first name RAIN cannot apply, saying what to use."""
    for name in names:
        if name in UNSUPPORTED:
            raise ConfigError(
                f"{name} is not supported by RAIN's tree search: {UNSUPPORTED[name].instead} "
                "(RainConfig fields: top_k, temperature, rollout_temperature, ...)"
            )


def settings_asked(generation_config: Any) -> dict[str, object]:
    """The unsupported settings a ``GenerationConfig`` sets to anything but neutral.

    Sampling cut-offs count only when it samples: ``generate`` ignores them otherwise.
    """
    sampling = bool(getattr(generation_config, "do_sample", False))
    asked: dict[str, object] = {}
    for name, setting in UNSUPPORTED.items():
        value = getattr(generation_config, name, None)
        if setting.keyword_only or (setting.sampling_only and not sampling):
            continue
        if setting.asks(value):
            asked[name] = value
    return asked


def note_model_defaults(generation_config: Any) -> list[str]:
    """Sampling settings in a model's own generation config that RAIN will not apply.

    Logged once per generator, so a user who relies on them learns why the
    answer differs from ``model.generate``'s.
    """
    ignored = [f"{name}={value!r}" for name, value in settings_asked(generation_config).items()]
    if ignored:
        logger.warning(
            "rain: the model's generation_config sets %s; RAIN's search does not apply "
            "these (its sampling is RainConfig's top_k and temperature)",
            ", ".join(ignored),
        )
    return ignored
