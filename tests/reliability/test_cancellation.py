"""Cancelled calls and abandoned streams stop the search and free the generator."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rain_integrations.langchain import RainLLM
from rain_integrations.llama_index import Rain
from rain_search import cli


def runs_again_promptly(generator, seconds: float = 30.0) -> bool:
    """True if another generation can start and finish within ``seconds``."""
    done: list[object] = []
    worker = threading.Thread(
        target=lambda: done.append(generator.generate("Hi", max_new_tokens=2))
    )
    worker.start()
    worker.join(timeout=seconds)
    return bool(done)


def slow(text: str) -> float:
    time.sleep(0.01)  # a judge slow enough that a long answer takes many seconds
    return 1.0


@pytest.fixture
def slow_generator(generator):
    generator.evaluator = type(generator.evaluator)(slow)
    return generator


def test_cancelling_ainvoke_stops_the_search(slow_generator) -> None:
    llm = RainLLM.from_generator(slow_generator, max_new_tokens=400)

    async def main() -> float:
        task = asyncio.create_task(llm.ainvoke("Tell me a long story."))
        await asyncio.sleep(0.3)
        task.cancel()
        start = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - start

    assert asyncio.run(main()) < 1.0
    start = time.perf_counter()
    assert runs_again_promptly(slow_generator)
    assert time.perf_counter() - start < 5.0  # the abandoned search stopped, it did not finish


def test_breaking_out_of_astream(slow_generator) -> None:
    llm = RainLLM.from_generator(slow_generator, max_new_tokens=400)

    async def main() -> str:
        async for chunk in llm.astream("Tell me a long story."):
            return chunk
        return ""

    asyncio.run(main())
    assert runs_again_promptly(slow_generator, seconds=5.0)


def test_breaking_out_of_a_sync_stream(slow_generator) -> None:
    llm = RainLLM.from_generator(slow_generator, max_new_tokens=400)
    for _ in llm.stream("Tell me a long story."):
        break
    assert runs_again_promptly(slow_generator, seconds=5.0)


def test_llama_index_async_stream_cancelled(slow_generator) -> None:
    rain = Rain(generator=slow_generator, config=slow_generator.config, max_new_tokens=400)

    async def main() -> None:
        async def consume() -> None:
            async for _ in await rain.astream_complete("Tell me a long story."):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert runs_again_promptly(slow_generator, seconds=5.0)


def test_keyboard_interrupt_in_the_cli_exits_cleanly(monkeypatch, capsys) -> None:
    def interrupted(args):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the model loads or searches

    cli.build_parser()  # import the plug-in subcommands unpatched: they keep what they import
    monkeypatch.setattr(cli, "make_generator", interrupted)
    assert cli.main(["generate", "hi"]) == 130
    assert capsys.readouterr().err.strip() == "rain: interrupted"
