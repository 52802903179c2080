"""The one table of settings RAIN cannot apply: keywords, GenerationConfigs, model defaults."""

from __future__ import annotations

import logging

import pytest
from transformers import GenerationConfig

from rain_search.errors import ConfigError
from rain_search.knobs import UNSUPPORTED, note_model_defaults, refuse_unsupported, settings_asked


def test_every_name_in_the_table_is_refused_as_a_keyword_with_what_to_use() -> None:
    for name, setting in UNSUPPORTED.items():
        with pytest.raises(ConfigError, match=f"{name} is not supported") as raised:
            refuse_unsupported([name])
        assert setting.instead in str(raised.value)
    refuse_unsupported(["top_k", "temperature", "max_new_tokens"])  # RAIN's own: no error


@pytest.mark.parametrize(
    ("settings", "asked"),
    [
        ({}, {}),  # generate's defaults ask for nothing RAIN lacks
        ({"do_sample": False, "top_p": 0.5}, {}),  # generate ignores cut-offs when greedy
        ({"do_sample": True, "top_p": 0.5}, {"top_p": 0.5}),
        ({"do_sample": True, "top_p": 1.0, "typical_p": 1.0}, {}),  # keep every token
        ({"repetition_penalty": 1.3, "num_beams": 2}, {"repetition_penalty": 1.3, "num_beams": 2}),
        ({"epsilon_cutoff": 3e-4}, {"epsilon_cutoff": 3e-4}),
        ({"output_scores": True}, {"output_scores": True}),
    ],
)
def test_a_generation_config_asks_only_for_what_differs_from_neutral(settings, asked) -> None:
    assert settings_asked(GenerationConfig(**settings)) == asked


def test_a_models_own_defaults_are_warned_about_from_the_same_table(caplog) -> None:
    config = GenerationConfig(do_sample=True, top_p=0.9, repetition_penalty=1.1)
    with caplog.at_level(logging.WARNING, logger="rain_search.knobs"):
        assert note_model_defaults(config) == ["top_p=0.9", "repetition_penalty=1.1"]
    assert "does not apply" in caplog.text
    assert note_model_defaults(GenerationConfig()) == []
