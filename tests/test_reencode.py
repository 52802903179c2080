"""The re-encoding baseline is the same search as the cached one, only slower."""

from __future__ import annotations

import pytest
import torch

from rain_search import RainConfig, RainGenerator
from rain_search.backends.base import ExpandRequest
from rain_search.backends.hf import HFBackend
from rain_search.backends.judge import HFJudge
from rain_search.backends.reencode import ReencodeBackend, ReencodeJudge
from rain_search.stats import Counters
from rain_search.templates import load_template

ATOL = 1e-4


def test_top_children_match_the_cached_backend(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    ids = tokenizer.encode("Human: tell me a story.\nAssistant:", add_special_tokens=False)
    cached, plain = HFBackend(model, tokenizer), ReencodeBackend(model, tokenizer)
    requests = [
        ExpandRequest(length=1, mode="top", count=3),
        ExpandRequest(length=4, mode="sample", greedy=True, count=0),
    ]
    for request in requests:
        ours = cached.expand([cached.start(ids)], request, torch.Generator().manual_seed(0))
        theirs = plain.expand([plain.start(ids)], request, torch.Generator().manual_seed(0))
        assert [p.token_ids for p in ours.proposals] == [p.token_ids for p in theirs.proposals]
        for a, b in zip(ours.proposals, theirs.proposals, strict=True):
            assert a.log_prob == pytest.approx(b.log_prob, abs=ATOL)
            torch.testing.assert_close(
                a.state.next_log_probs, b.state.next_log_probs, atol=ATOL, rtol=0
            )
    # Re-encoding costs a prompt-length forward call per candidate.
    assert plain.counters.tokens_processed > 3 * len(ids) * 2


def test_reencoding_judge_matches_the_cached_judge(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    template = load_template("harmless")
    responses = ["Mix flour and water", "Mix flour and water, then knead.", "No."]
    cached = HFJudge(model, tokenizer, template, Counters()).score("Bake bread?", responses)
    counters = Counters()
    plain = ReencodeJudge(model, tokenizer, template, counters).score("Bake bread?", responses)
    assert cached == pytest.approx(plain, abs=ATOL)
    assert counters.forward_calls == 2 * len(responses)


def test_same_answer_with_and_without_the_kv_cache(tiny_llama, no_e) -> None:
    """With greedy candidates and rollouts the search is deterministic: both modes agree."""
    model, tokenizer = tiny_llama
    config = RainConfig.preset(
        "fast", max_new_tokens=12, temperature=0.0, rollout_temperature=0.0, seed=0
    )
    results = [
        RainGenerator(
            model, tokenizer, config, evaluator=no_e, embedder=None, kv_cache=kv
        ).generate("Tell me a story.")
        for kv in (True, False)
    ]
    assert results[0].token_ids == results[1].token_ids
    assert results[1].totals.tokens_processed > 2 * results[0].totals.tokens_processed
