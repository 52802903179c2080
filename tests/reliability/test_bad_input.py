"""Bad input gets an error that names the problem and the fix, never a torch trace."""

from __future__ import annotations

import math

import pytest

from rain_search.config import RainConfig
from rain_search.errors import (
    ConfigError,
    EvaluatorError,
    ModelLoadError,
    PromptError,
    TemplateError,
)
from rain_search.models import load_model
from rain_search.search import RainGenerator


@pytest.mark.parametrize("prompt", ["", "   \n", [{"role": "user", "content": " "}]])
def test_empty_prompt(generator, prompt) -> None:
    with pytest.raises(PromptError, match="prompt is empty"):
        generator.generate(prompt)


def test_prompt_of_the_wrong_type(generator) -> None:
    with pytest.raises(PromptError, match="must be a string or a list"):
        generator.generate(42)
    with pytest.raises(PromptError, match="role 'robot'"):
        generator.generate([{"role": "robot", "content": "hi"}])


def test_prompt_longer_than_the_context_window(generator) -> None:
    window = generator.model.config.max_position_embeddings  # 8192 characters
    with pytest.raises(PromptError, match=rf"prompt is \d+ tokens .* context window is {window}"):
        generator.generate("word " * (window // 4))


def test_answer_budget_is_clamped_to_the_context_window_with_a_warning(generator) -> None:
    window = generator.model.config.max_position_embeddings
    result = generator.vanilla("x" * (window - 48), max_new_tokens=100)
    assert result.completion_tokens <= 48
    assert any("max_new_tokens lowered" in warning for warning in result.warnings)


def test_unknown_template(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    with pytest.raises(TemplateError, match="unknown template 'harmfull'"):
        RainGenerator(model, tokenizer, template="harmfull", embedder="hidden")


def test_label_that_is_not_one_token(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    template = {
        "name": "yes-no",
        "instruction": "Judge.",
        "question": "Good?",
        "good_option": "yes",
        "bad_option": "no",
        "labels": ["Yes", "No"],
    }
    with pytest.raises(TemplateError, match="'Yes' is not a single token"):
        RainGenerator(model, tokenizer, template=template, embedder="hidden")


@pytest.mark.parametrize(
    ("field", "value"),
    [("c_puct", -1.0), ("num_children", 0), ("temperature", -0.5), ("similarity_threshold", 1.5)],
)
def test_config_out_of_range(field, value) -> None:
    with pytest.raises(ConfigError, match=field):
        RainConfig.create(**{field: value})


def test_per_call_override_out_of_range(generator) -> None:
    with pytest.raises(ConfigError, match="max_iterations"):
        generator.generate("hi", max_iterations=-5)
    with pytest.raises(ConfigError, match="unknown preset 'quick'"):
        RainConfig.preset("quick")


def test_unknown_model_path(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="cannot load model 'no-org/no-such-model'"):
        load_model("no-org/no-such-model", local_files_only=True)


@pytest.mark.parametrize(
    ("returned", "message"),
    [(math.nan, "outside"), (3.0, "outside"), ("good", "type str"), (None, "NoneType")],
)
def test_evaluator_returning_nonsense(tiny_llama, returned, message) -> None:
    model, tokenizer = tiny_llama
    generator = RainGenerator(
        model, tokenizer, "fast", evaluator=lambda text: returned, embedder="hidden"
    )
    with pytest.raises(EvaluatorError, match=message):
        generator.generate("hello", max_new_tokens=3)


def test_evaluator_that_raises(tiny_llama) -> None:
    model, tokenizer = tiny_llama

    def broken(text: str) -> float:
        raise KeyError("lexicon")

    generator = RainGenerator(model, tokenizer, "fast", evaluator=broken, embedder="hidden")
    with pytest.raises(EvaluatorError, match="'broken' raised KeyError"):
        generator.generate("hello", max_new_tokens=3)


@pytest.mark.parametrize("stops", [("",), ("ok", "")])
def test_empty_stop_sequences(generator, stops) -> None:
    with pytest.raises(ConfigError, match="stop sequences must be non-empty"):
        generator.generate("hi", stop_sequences=stops)


def test_max_new_tokens_zero(generator) -> None:
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generator.generate("hi", max_new_tokens=0)


def test_adapters_reject_bad_input_with_clear_errors(generator) -> None:
    from langchain_core.messages import HumanMessage
    from pydantic import ValidationError

    from rain_integrations.langchain import ChatRain, RainLLM

    llm = RainLLM.from_generator(generator, max_new_tokens=3)
    with pytest.raises(PromptError, match="prompt is empty"):
        llm.invoke("  ")
    with pytest.raises(ValueError, match="Invalid input type"):
        llm.invoke(42)
    with pytest.raises(ConfigError, match="stop sequences must be non-empty"):
        llm.invoke("hi", stop=[""])
    with pytest.raises(ValidationError, match="max_new_tokens"):
        RainLLM(max_tokens=0)
    with pytest.raises(ValidationError, match="timeout"):
        ChatRain(timeout=-1)
    with pytest.raises(PromptError, match="prompt is empty"):
        ChatRain.from_generator(generator).invoke([HumanMessage("")])
