"""The lock-plus-LRU memo the embedders and the evaluators share."""

from __future__ import annotations

import threading
import time

import torch

from rain_search.embeddings import CachingEmbedder
from rain_search.evaluators import FunctionEvaluator
from rain_search.memo import Memo


def test_missing_keys_are_computed_once_in_one_call_and_kept() -> None:
    memo: Memo[str, int] = Memo(10)
    calls: list[list[str]] = []

    def lengths(keys: list[str]) -> list[int]:
        calls.append(keys)
        return [len(key) for key in keys]

    lookups: list[tuple[int, int]] = []

    def count(asked: int, missing: int) -> None:
        lookups.append((asked, missing))

    assert memo.get_many(["a", "bb", "a"], lengths, on_lookup=count) == [1, 2, 1]
    assert memo.get_many(["bb", "ccc"], lengths, on_lookup=count) == [2, 3]
    assert calls == [["a", "bb"], ["ccc"]]  # distinct, in order, only what was missing
    assert lookups == [(3, 2), (2, 1)]
    assert memo.missing(["a", "dddd", "dddd"]) == 2
    memo.clear()
    assert memo.missing(["a", "bb"]) == 2


def test_the_least_recently_used_value_is_forgotten_first() -> None:
    memo: Memo[int, int] = Memo(2)
    memo.get_many([1, 2], lambda keys: [k * 10 for k in keys])
    memo.get_many([1], lambda keys: [-1 for _ in keys])  # 1 is used again: 2 is oldest
    memo.get_many([3], lambda keys: [k * 10 for k in keys])
    assert memo.missing([1]) == 0 and memo.missing([2]) == 1 and memo.missing([3]) == 0


def test_threads_asking_for_one_key_compute_it_once() -> None:
    memo: Memo[str, str] = Memo(10)
    computed: list[str] = []

    def slow(keys: list[str]) -> list[str]:
        computed.extend(keys)
        time.sleep(0.05)
        return [key.upper() for key in keys]

    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(memo.get_many(["x"], slow)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert computed == ["x"] and results == [["X"]] * 4


def test_the_evaluator_and_the_embedder_count_and_clear_through_it() -> None:
    judge = FunctionEvaluator(lambda text: 1.0 if "ok" in text else -1.0)
    assert judge.score("q", ["ok", "bad", "ok"]) == [1.0, -1.0, 1.0]
    assert judge.score("q", ["ok"]) == [1.0]
    assert (judge.counters.evaluator_calls, judge.counters.cache_hits) == (4, 2)
    assert judge.uncached([("q", "ok"), ("q", "new")]) == 1

    class Lengths(CachingEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[list[str]] = []

        def embed_uncached(self, texts: list[str]) -> torch.Tensor:
            self.batches.append(texts)
            return torch.tensor([[float(len(t))] for t in texts])

    embedder = Lengths()
    assert embedder.embed(["a", "bbb", "a"]).flatten().tolist() == [1.0, 3.0, 1.0]
    embedder.embed(["bbb"])
    embedder.clear_cache()
    embedder.embed(["bbb"])
    assert embedder.batches == [["a", "bbb"], ["bbb"]]
