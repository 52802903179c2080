"""RainGenerator on a tiny random Llama: streaming, cancellation, warm-up, vanilla."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rain_search.config import RainConfig
from rain_search.errors import Cancelled, ConfigError
from rain_search.search import RainGenerator


@pytest.fixture
def generator(tiny_llama) -> RainGenerator:
    model, tokenizer = tiny_llama
    return RainGenerator(
        model,
        tokenizer,
        "fast",
        evaluator=lambda text: -1.0 if "e" in text else 1.0,
        embedder="hidden",
    )


def test_stream_yields_the_steps_of_generate(generator) -> None:
    whole = generator.generate("Tell me a story.", max_new_tokens=12, seed=1)
    stream = generator.stream("Tell me a story.", max_new_tokens=12, seed=1)
    steps = list(stream)
    assert "".join(step.text for step in steps) == whole.text
    assert stream.result is not None and stream.result.token_ids == whole.token_ids
    assert [s.token_ids for s in steps] == [s.token_ids for s in whole.steps]


def test_breaking_out_of_a_stream_frees_the_generator(generator) -> None:
    stream = generator.stream("Tell me a story.", max_new_tokens=30)
    next(stream)
    stream.close()
    assert stream.result is None
    # The lock was released: another call in another thread runs to the end.
    done = []
    worker = threading.Thread(
        target=lambda: done.append(generator.generate("Hi", max_new_tokens=3))
    )
    worker.start()
    worker.join(timeout=60)
    assert done and 1 <= done[0].completion_tokens <= 3


def test_cancel_from_another_thread_stops_the_search(generator) -> None:
    stream = generator.stream("Tell me a story.", max_new_tokens=30)
    next(stream)
    stream.cancel()
    with pytest.raises(Cancelled):
        list(stream)


def test_prompt_errors_surface_when_the_stream_is_created(generator) -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        generator.stream(" ")


def test_vanilla_and_warm_up(generator) -> None:
    generator.warm_up()
    result = generator.vanilla("Hello", max_new_tokens=5)
    assert result.mode == "vanilla" and result.completion_tokens <= 5
    assert result.stats["forward_calls"] == result.completion_tokens  # prompt, then 1 per token


def test_cancelling_an_async_consumer_stops_the_search_and_frees_the_generator(generator) -> None:
    steps: list[object] = []

    async def main() -> None:
        stream = generator.stream("Tell me a story.", max_new_tokens=60)

        async def consume() -> None:
            async for step in stream:
                steps.append(step)

        task = asyncio.create_task(consume())
        while not steps:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    done: list[object] = []
    worker = threading.Thread(
        target=lambda: done.append(generator.generate("Hi", max_new_tokens=2))
    )
    worker.start()
    worker.join(timeout=60)
    assert done, "the cancelled search released the generator"


def test_votes_configures_the_self_evaluator(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    hard = RainGenerator(model, tokenizer, RainConfig(), embedder="hidden")
    assert hard.evaluator.votes == "hard"  # the paper's (and the default) way
    assert set(hard.evaluator.score("Hi", ["Hello.", "Go away."])) <= {-1.0, 0.0, 1.0}
    soft = RainGenerator(model, tokenizer, RainConfig(votes="soft"), embedder="hidden")
    assert soft.evaluator.votes == "soft"
    with pytest.raises(ConfigError, match="votes='soft' differs"):
        hard.generate("Hi", votes="soft")
    with pytest.raises(ConfigError, match="swap_labels=False differs"):
        hard.generate("Hi", swap_labels=False)
