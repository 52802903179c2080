"""Judge and embedder calls shared by every search of an engine turn, cost split back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest
import torch

from rain_search import RainConfig, embeddings
from rain_search.backends.judge import HFJudge
from rain_search.embeddings import HiddenStateEmbedder, MiniLMEmbedder, make_embedder
from rain_search.errors import EvaluatorError
from rain_search.evaluators import FunctionEvaluator
from rain_search.result import RainResult
from rain_search.search import RainGenerator, RainStream
from rain_search.stats import Counters, share_out
from rain_search.templates import load_template

PROMPTS = ["Hello", "Tell me a story", "Why is the sky blue?", "One two", "A", "Go on"]


def judge(text: str) -> float:
    return -text.count("e") / 5


class CountingJudge(FunctionEvaluator):
    def __init__(self) -> None:
        super().__init__(judge)
        self.calls = 0

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.calls += 1
        return super().score_pairs(pairs)


class CountingEmbedder(HiddenStateEmbedder):
    calls = 0

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += 1
        return super().embed(texts)


def finish(stream: RainStream) -> RainResult:
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


Calls = list[tuple[int, int]]  # (judge calls, embedder calls), one entry per turn or pass


def counted_generator(  # type: ignore[no-untyped-def]
    tiny_llama, **options: object
) -> tuple[RainGenerator, Calls, Calls]:
    """A generator, and its judge and embedder calls in each engine turn and each pass.

    A turn (``run_once``) may answer several passes of work, each waiting on
    the last (a leaf's judgment, then its embedding, then the next leaf's).
    """
    model, tokenizer = tiny_llama
    config = RainConfig.preset("fast").merged(max_new_tokens=8, parallel_leaves=4)
    judge, embedder = CountingJudge(), CountingEmbedder(model, tokenizer)
    generator = RainGenerator(
        model, tokenizer, config, evaluator=judge, embedder=embedder, **options
    )
    engine, turns, passes = generator.scheduler.engine, [], []

    def counting(call: Callable[..., object], log: Calls) -> Callable[..., object]:
        def counted(*args: object) -> object:
            before = judge.calls, embedder.calls
            result = call(*args)
            log.append((judge.calls - before[0], embedder.calls - before[1]))
            return result

        return counted

    engine.run_once = counting(engine.run_once, turns)  # type: ignore[method-assign]
    engine._answer = counting(engine._answer, passes)  # type: ignore[method-assign]
    return generator, turns, passes


def test_concurrent_searches_share_one_judge_and_one_embedder_call_a_pass(tiny_llama) -> None:
    alone, _, _ = counted_generator(tiny_llama)
    solo = [alone.generate(p, seed=seed) for seed, p in enumerate(PROMPTS)]
    # Its own caches, so every vector and score is made in calls shared by searches.
    together, turns, passes = counted_generator(tiny_llama)
    streams = [together.stream(p, seed=seed).start() for seed, p in enumerate(PROMPTS)]
    assert [finish(s).token_ids for s in streams] == [r.token_ids for r in solo]
    assert max(j for j, _ in passes) == max(e for _, e in passes) == 1  # not one a search
    judged, embedded = sum(j for j, _ in turns), sum(e for _, e in turns)
    assert judged <= len(turns) and embedded <= len(turns)
    assert 3 * judged < alone.evaluator.calls and 3 * embedded < alone.embedder.calls  # type: ignore[attr-defined]


def test_an_evaluator_error_ends_only_the_searches_it_fails(tiny_llama) -> None:
    model, tokenizer = tiny_llama

    def picky(prompt: str, text: str) -> float:
        if prompt.startswith("boom"):
            raise ValueError("no judgment for this prompt")
        return judge(text)

    config = RainConfig.preset("fast").merged(max_new_tokens=6, parallel_leaves=4)
    generator = RainGenerator(model, tokenizer, config, evaluator=picky, embedder="hidden")
    solo = [generator.generate(p, seed=1) for p in ("Hello", "Go on")]
    generator.evaluator.clear_cache()
    streams = [generator.stream(p, seed=1).start() for p in ("Hello", "boom now", "Go on")]
    with pytest.raises(EvaluatorError, match="no judgment"):
        finish(streams[1])
    survivors = [finish(streams[0]), finish(streams[2])]
    assert [r.token_ids for r in survivors] == [r.token_ids for r in solo]


def test_a_shared_call_charges_each_search_what_its_texts_cost() -> None:
    total = Counters(forward_calls=2, tokens_processed=10, evaluator_calls=4, cache_hits=1)
    first, second, cached = share_out(total, texts=[2, 1, 1], fresh=[2, 1, 0])
    assert first == Counters(forward_calls=2, tokens_processed=7, evaluator_calls=2, cache_hits=0)
    assert second == Counters(forward_calls=1, tokens_processed=3, evaluator_calls=1, cache_hits=0)
    assert cached == Counters(forward_calls=0, tokens_processed=0, evaluator_calls=1, cache_hits=1)


def test_minilm_runs_on_the_models_device_one_copy_per_device(monkeypatch) -> None:
    model = SimpleNamespace(device=torch.device("cuda", 1))
    embedder = make_embedder("minilm", model=model)  # type: ignore[arg-type]
    assert isinstance(embedder, MiniLMEmbedder) and embedder.device == "cuda:1"
    assert make_embedder("minilm").device == "cpu"  # type: ignore[attr-defined]
    loaded: list[str] = []
    monkeypatch.setattr(embeddings, "_load_minilm", loaded.append)
    embeddings.load_minilm(torch.device("cpu"))
    embeddings.load_minilm("cpu")
    assert loaded == ["cpu", "cpu"]  # one key, so one cached copy


class PromptJudge:
    """A plain evaluator: one prompt a call, so searches share a call only with their prompt."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.prompts: list[str] = []

    def score(self, prompt: str, responses: Sequence[str]) -> list[float]:
        self.counters.evaluator_calls += len(responses)
        self.prompts.append(prompt)
        return [judge(text) for text in responses]


def test_a_judge_without_pairs_shares_calls_among_searches_of_one_prompt(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    config = RainConfig.preset("fast").merged(max_new_tokens=6)
    plain = PromptJudge()
    generator = RainGenerator(model, tokenizer, config, evaluator=plain, embedder="hidden")
    asked = [("Hello", 1), ("Hello", 2), ("Go on", 1)]
    solo = [generator.generate(p, seed=seed) for p, seed in asked]
    calls_alone = len(plain.prompts)
    streams = [generator.stream(p, seed=seed).start() for p, seed in asked]
    together = [finish(stream) for stream in streams]
    assert [r.token_ids for r in together] == [r.token_ids for r in solo]
    assert len(plain.prompts) - calls_alone < calls_alone
    # Each search is charged the texts it asked, whoever shared its calls.
    assert [r.totals.evaluator_calls for r in together] == [r.totals.evaluator_calls for r in solo]


def test_the_model_judge_scores_pairs_of_many_prompts_as_each_prompt_alone(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    template = load_template("harmless")
    pairs = [
        ("How do I bake bread?", "Mix flour."),
        ("Hi", "Hello."),
        ("How do I bake bread?", "No."),
    ]
    counters = Counters()
    together = HFJudge(model, tokenizer, template, counters, votes="soft", max_rows=6)
    together.fixed_cache()
    calls = counters.forward_calls
    scores = together.score_pairs(pairs)
    assert counters.forward_calls - calls == 1  # 3 pairs x 2 orders in one call
    alone = HFJudge(model, tokenizer, template, Counters(), votes="soft", max_rows=2)
    assert scores == pytest.approx([alone.score(p, [r])[0] for p, r in pairs], abs=1e-4)


def test_batch_invariant_searches_keep_judge_and_embedder_calls_of_their_own(tiny_llama) -> None:
    alone, _, _ = counted_generator(tiny_llama)
    solo = [alone.generate(p, seed=seed) for seed, p in enumerate(PROMPTS[:3])]
    together, _, passes = counted_generator(tiny_llama, batch_invariant=True)
    streams = [together.stream(p, seed=seed).start() for seed, p in enumerate(PROMPTS[:3])]
    assert [finish(s).token_ids for s in streams] == [r.token_ids for r in solo]
    assert max(j for j, _ in passes) > 1  # searches asked in the same pass, called apart
    assert together.evaluator.calls == alone.evaluator.calls  # type: ignore[attr-defined]
    assert together.embedder.calls == alone.embedder.calls  # type: ignore[attr-defined]


class ShortEmbedder(HiddenStateEmbedder):
    """Drops the last vector when asked for more than one: a broken custom embedder."""

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = super().embed(texts)
        return vectors[:-1] if len(texts) > 1 else vectors


def test_an_embedder_that_returns_too_few_vectors_is_named_not_a_zip_error(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    config = RainConfig.preset("fast").merged(max_new_tokens=4, parallel_leaves=2)
    generator = RainGenerator(
        model, tokenizer, config, evaluator=judge, embedder=ShortEmbedder(model, tokenizer)
    )
    with pytest.raises(EvaluatorError, match=r"must return a \(len\(texts\), dim\) tensor"):
        generator.generate("Tell me a story", seed=0)
