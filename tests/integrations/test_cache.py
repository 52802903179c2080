"""LangChain's answer cache keys on everything that changes a RAIN answer (issue 20).

Two models that differ only in their judge once shared cache entries, so a
guarded model was served an answer made under another judge.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache

from rain_integrations.langchain import ChatRain, RainLLM
from rain_search.errors import ConfigError
from rain_search.evaluators import FunctionEvaluator


def no_b(text: str) -> float:
    return -1.0 if "b" in text else 1.0


def no_c(text: str) -> float:
    return -1.0 if "c" in text else 1.0


@pytest.fixture
def cache() -> Iterator[InMemoryCache]:
    cache = InMemoryCache()
    set_llm_cache(cache)
    try:
        yield cache
    finally:
        set_llm_cache(None)


def test_two_differently_judged_chat_models_never_share_an_entry(tiny_llama, cache) -> None:
    model, tokenizer = tiny_llama
    common = {"model": model, "tokenizer": tokenizer, "embedder": "hidden", "preset": "fast"}
    guarded = ChatRain(evaluator=no_b, max_new_tokens=6, **common)
    other = ChatRain(evaluator=no_c, max_new_tokens=6, **common)
    first = guarded.invoke("Hello")
    assert len(cache._cache) == 1
    other.invoke("Hello")
    assert len(cache._cache) == 2  # its own entry, not the guarded model's answer
    again = guarded.invoke("Hello")  # a hit on its own entry
    assert again.content == first.content and len(cache._cache) == 2
    assert again.response_metadata == first.response_metadata


def test_rain_llm_entries_are_per_judge_too(tiny_llama, cache) -> None:
    model, tokenizer = tiny_llama
    common = {"model": model, "tokenizer": tokenizer, "embedder": "hidden", "preset": "fast"}
    RainLLM(evaluator=no_b, max_new_tokens=4, **common).invoke("Hi")
    RainLLM(evaluator=no_c, max_new_tokens=4, **common).invoke("Hi")
    assert len(cache._cache) == 2


@pytest.mark.parametrize("adapter", [RainLLM, ChatRain])
def test_every_answer_changing_option_is_in_the_key(adapter) -> None:
    base = adapter(evaluator=no_b)._identifying_params
    changed = [
        adapter(evaluator=no_c),
        adapter(),  # self-evaluation with the harmless template
        adapter(template="truthful"),
        adapter(evaluator=no_b, system="Be brief."),
        adapter(evaluator=no_b, embedder="hidden"),
        adapter(evaluator=no_b, seed=1),
        adapter(evaluator=no_b, model_id="another/model"),
        adapter(evaluator=FunctionEvaluator(lambda t: 1.0, name="v2")),
    ]
    keys = [str(sorted(m._identifying_params.items())) for m in changed]
    assert str(sorted(base.items())) not in keys
    assert len(set(keys)) == len(keys)
    assert adapter(evaluator=no_b)._identifying_params == base  # and stable


def test_a_judge_without_a_stable_name_is_refused_only_when_caching(tiny_llama, cache) -> None:
    model, tokenizer = tiny_llama
    common = {"model": model, "tokenizer": tokenizer, "embedder": "hidden", "preset": "fast"}
    chat = ChatRain(evaluator=lambda text: 1.0, max_new_tokens=2, **common)
    with pytest.raises(ConfigError, match="no stable name.*FunctionEvaluator"):
        chat.invoke("Hello")
    assert not cache._cache
    uncached = ChatRain(evaluator=lambda text: 1.0, max_new_tokens=2, cache=False, **common)
    assert isinstance(uncached.invoke("Hello").content, str)
    named = FunctionEvaluator(lambda text: 1.0, name="always-good")
    ChatRain(evaluator=named, max_new_tokens=2, **common).invoke("Hello")
    assert len(cache._cache) == 1
