"""A generator on the tiny random Llama, with a judge that rejects the letter e."""

from __future__ import annotations

import pytest

from rain_search.search import RainGenerator


def no_e(text: str) -> float:
    return -1.0 if "e" in text else 1.0


@pytest.fixture
def generator(tiny_llama) -> RainGenerator:
    model, tokenizer = tiny_llama
    return RainGenerator(model, tokenizer, "fast", evaluator=no_e, embedder="hidden")
