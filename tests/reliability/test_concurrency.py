"""One model shared by threads and tasks: every caller gets its own correct answer."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from rain_integrations.langchain import RainLLM
from rain_search.models import load_model

SEEDS = range(8)


def test_eight_threads_get_the_sequential_answers(generator) -> None:
    llm = RainLLM.from_generator(generator, max_new_tokens=10, temperature=1.5)
    sequential = [llm.invoke("Tell me a story.", seed=seed) for seed in SEEDS]
    assert len(set(sequential)) > 1, "different seeds give different answers"
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda s: llm.invoke("Tell me a story.", seed=s), SEEDS))
    assert concurrent == sequential
    assert (
        llm.batch(["Tell me a story."] * 8, config={"max_concurrency": 8})
        == [llm.invoke("Tell me a story.")] * 8
    )


def test_eight_asyncio_tasks_get_the_sequential_answers(generator) -> None:
    llm = RainLLM.from_generator(generator, max_new_tokens=10, temperature=1.5)
    sequential = [llm.invoke("Tell me a story.", seed=seed) for seed in SEEDS]

    async def main() -> list[str]:
        return await asyncio.gather(*(llm.ainvoke("Tell me a story.", seed=s) for s in SEEDS))

    assert asyncio.run(main()) == sequential


def test_the_model_is_loaded_once(tiny_llama, tmp_path) -> None:
    model, tokenizer = tiny_llama
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    first = load_model(str(tmp_path), device="cpu")
    with ThreadPoolExecutor(4) as pool:
        others = list(pool.map(lambda _: load_model(str(tmp_path), device="cpu"), range(4)))
    assert all(other[0] is first[0] and other[1] is first[1] for other in others)
    llms = [RainLLM(model_id=str(tmp_path), device="cpu", embedder="hidden") for _ in range(2)]
    assert llms[0].rain.model is llms[1].rain.model is first[0]
