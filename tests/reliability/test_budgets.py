"""Wall-clock and forward-call budgets end a search with the best answer so far, flagged."""

from __future__ import annotations

import asyncio
import time

import pytest

from rain_integrations.langchain import ChatRain, RainLLM
from rain_integrations.llama_index import Rain
from rain_search.search import RainGenerator


def test_forward_call_budget_on_a_real_backend(generator) -> None:
    full = generator.generate("Tell me a story.", max_new_tokens=40)
    cut = generator.generate("Tell me a story.", max_new_tokens=40, max_forward_calls=30)
    assert cut.truncated and cut.finish_reason == "budget"
    assert cut.completion_tokens < full.completion_tokens
    # the same search up to the step the budget cut short (its visits were fewer)
    searched = sum(len(step.token_ids) for step in cut.steps[:-1])
    assert cut.token_ids[:searched] == full.token_ids[:searched]
    # The budget is checked before every iteration, so it is overrun by at most one:
    # a 10-token set decoded beside a rollout of at most the preset's cap, and one embedding call.
    assert cut.stats["forward_calls"] < 30 + generator.config.rollout_max_tokens + 1


def longer_is_better(text: str) -> float:
    """A judge under which an early EOS (a short text) always loses to going on."""
    return min(len(text) / 200, 1.0) * 2 - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_timeout_bounds_wall_time(tiny_llama, seed: int) -> None:
    model, tokenizer = tiny_llama
    generator = RainGenerator(model, tokenizer, "fast", evaluator=longer_is_better)
    generator.warm_up()  # loading the embedder is not the search's time
    start = time.perf_counter()
    result = generator.generate("Tell me a story.", max_new_tokens=400, timeout=0.2, seed=seed)
    assert time.perf_counter() - start < 5.0
    assert result.finish_reason == "budget" and result.truncated
    assert "timeout" in result.warnings[0]


def test_adapters_report_truncation(generator) -> None:
    llm = RainLLM.from_generator(generator, max_new_tokens=60, max_forward_calls=4)
    info = llm.generate(["Tell me a story."]).generations[0][0].generation_info
    assert info["finish_reason"] == "budget" and info["search"]["truncated"]
    chat = ChatRain.from_generator(generator, max_new_tokens=60, timeout=1e-6)
    assert chat.invoke("Tell me a story.").response_metadata["finish_reason"] == "budget"
    rain = Rain(generator=generator, config=generator.config, max_new_tokens=60)
    raw = asyncio.run(rain.acomplete("Tell me a story.", max_forward_calls=4)).raw
    assert raw["finish_reason"] == "budget" and raw["warnings"]
