"""The adapters' gaps found by trying them as a new user (issue 14), one test each."""

from __future__ import annotations

import pytest

from rain_integrations.langchain import ChatRain, RainLLM
from rain_integrations.llama_index import Rain
from rain_search import RainConfig
from rain_search.errors import ConfigError
from rain_search.evaluators import FunctionEvaluator

ADAPTERS = [RainLLM, ChatRain, Rain]


def test_token_counts_use_the_models_tokenizer_offline(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    llm = RainLLM(model=model, tokenizer=tokenizer, evaluator=lambda t: 1.0, embedder="hidden")
    text = "Hello, world"
    assert llm.get_token_ids(text) == tokenizer.encode(text, add_special_tokens=False)
    assert llm.get_num_tokens(text) == len(text)  # one token per character here
    chat = ChatRain(model=model, tokenizer=tokenizer, embedder="hidden")
    assert chat.get_num_tokens(text) == len(text)


def test_traces_report_the_per_call_max_tokens(generator) -> None:
    llm = RainLLM.from_generator(generator, max_new_tokens=8)
    assert llm._get_ls_params()["ls_max_tokens"] == 8
    assert llm._get_ls_params(max_tokens=3)["ls_max_tokens"] == 3
    assert llm._get_ls_params(max_new_tokens=5, temperature=0.5)["ls_temperature"] == 0.5


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_unknown_constructor_keywords_raise_like_per_call_ones(adapter) -> None:
    """Both are ValueErrors with the same message (pydantic wraps the constructor's)."""
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['max_tokenz'\]"):
        adapter(max_tokenz=5)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['max_tokenz'\]"):
        adapter().call_options(None, {"max_tokenz": 5})


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_preset_and_config_together_raise(adapter) -> None:
    with pytest.raises(ValueError, match="both preset= and config="):
        adapter(preset="fast", config=RainConfig(max_new_tokens=9))
    assert adapter(preset="fast", max_new_tokens=9).config.max_new_tokens == 9


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_sampling_knobs_rain_lacks_are_named(adapter, generator) -> None:
    with pytest.raises(ValueError, match="top_p is not supported"):
        adapter(top_p=0.9)
    with pytest.raises(ConfigError, match="repetition_penalty is not supported"):
        adapter.from_generator(generator).call_options(None, {"repetition_penalty": 1.2})


def test_sampling_knobs_are_named_by_the_core_too(generator) -> None:
    with pytest.raises(ConfigError, match="top_p is not supported"):
        generator.generate("Hi", top_p=0.9)
    with pytest.raises(ConfigError, match="num_beams is not supported"):
        generator.vanilla("Hi", num_beams=2)


def test_a_ready_model_and_tokenizer_pair(tiny_llama, generator) -> None:
    model, tokenizer = tiny_llama
    judge = generator.evaluator
    rain = Rain(
        model=model,
        tokenizer=tokenizer,
        evaluator=judge,
        embedder="hidden",
        preset="fast",
        max_new_tokens=6,
    )
    assert rain.rain.model is model and rain.rain.tokenizer is tokenizer
    assert rain.complete("Hello").text == generator.generate("Hello", max_new_tokens=6).text
    with pytest.raises(ValueError, match="come together"):
        Rain(model=model)


def test_loading_options_are_checked_when_the_adapter_is_built() -> None:
    with pytest.raises(ValueError, match="unknown model loading option"):
        RainLLM(model_kwargs={"device_mapp": "auto"})
    with pytest.raises(ValueError, match="not both"):
        Rain(device="cpu", device_map="auto")
    llm = RainLLM(device_map="auto", model_kwargs={"torch_dtype": "auto", "revision": "main"})
    assert llm.load_options() == {"device_map": "auto", "torch_dtype": "auto", "revision": "main"}


def test_a_function_judge_with_defaults_gets_only_the_response() -> None:
    seen: list[tuple] = []

    def banned(text, words=("lock",)):
        seen.append((text,))
        return -1.0 if any(w in text for w in words) else 1.0

    assert FunctionEvaluator(banned).score("How do I pick a lock?", ["Use a key."]) == [1.0]
    assert seen == [("Use a key.",)]

    def with_prompt(prompt, response):
        seen.append((prompt, response))
        return 0.5

    assert FunctionEvaluator(with_prompt).score("Q", ["A"]) == [0.5]
    assert seen[-1] == ("Q", "A")
    wrapped = FunctionEvaluator(lambda *args: 0.0 if len(args) == 1 else 1.0, takes_prompt=False)
    assert wrapped.score("Q", ["A"]) == [0.0]
    assert FunctionEvaluator(lambda *args: float(len(args) - 1)).score("Q", ["A"]) == [1.0]
