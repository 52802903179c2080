"""The same seed gives the same answer on CPU, through the core and both adapters."""

from __future__ import annotations

from rain_integrations.langchain import ChatRain
from rain_integrations.llama_index import Rain


def test_same_seed_same_answer_everywhere(generator) -> None:
    first = generator.generate("Tell me a story.", max_new_tokens=16, seed=11, temperature=1.5)
    again = generator.generate("Tell me a story.", max_new_tokens=16, seed=11, temperature=1.5)
    assert first.token_ids == again.token_ids
    assert [s.token_ids for s in first.steps] == [s.token_ids for s in again.steps]
    chat = ChatRain.from_generator(generator, max_new_tokens=16, temperature=1.5)
    rain = Rain(generator=generator, config=generator.config, max_new_tokens=16, temperature=1.5)
    assert chat.invoke("Tell me a story.", seed=11).content == first.text
    assert rain.complete("Tell me a story.", seed=11).text == first.text


def test_seed_none_draws_a_fresh_seed_and_reports_it(generator) -> None:
    result = generator.generate("Tell me a story.", max_new_tokens=8, seed=None)
    replay = generator.generate("Tell me a story.", max_new_tokens=8, seed=result.seed)
    assert replay.token_ids == result.token_ids
