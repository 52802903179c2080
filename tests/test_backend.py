"""The KV-cache path gives the same numbers as re-encoding everything, on a tiny random Llama."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
from transformers import DynamicCache

from rain_search.backends.base import ExpandRequest
from rain_search.backends.hf import HFBackend
from rain_search.backends.judge import HFJudge, label_token_id
from rain_search.backends.kv import roomy_cache
from rain_search.backends.proposals import sampling
from rain_search.backends.store import context_length, context_positions
from rain_search.errors import TemplateError
from rain_search.evaluators import ModelEvaluator
from rain_search.stats import Counters
from rain_search.templates import load_template

ATOL = 1e-4


def full_log_probs(model, ids: list[int]) -> torch.Tensor:
    """Next-token log-probs at every position, from scratch, no cache."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return logits.float().log_softmax(-1)


@pytest.fixture
def backend(tiny_llama) -> HFBackend:
    model, tokenizer = tiny_llama
    return HFBackend(model, tokenizer)


def prompt_ids(tokenizer) -> list[int]:
    return tokenizer.encode("Human: tell me a story.\nAssistant:", add_special_tokens=False)


def test_prompt_state_matches_full_encode(tiny_llama, backend) -> None:
    model, tokenizer = tiny_llama
    ids = prompt_ids(tokenizer)
    state = backend.start(ids)
    torch.testing.assert_close(
        state.next_log_probs, full_log_probs(model, ids)[-1], atol=ATOL, rtol=0
    )
    assert backend.counters.tokens_processed == len(ids)


def test_children_and_grandchildren_match_full_encode(tiny_llama, backend) -> None:
    model, tokenizer = tiny_llama
    ids = prompt_ids(tokenizer)
    root = backend.start(ids)
    gen = torch.Generator().manual_seed(0)
    top = backend.expand(
        [root], ExpandRequest(length=1, mode="top", count=3, rollout_tokens=6), gen
    )
    expected_first = full_log_probs(model, ids)[-1]
    assert [p.token_ids[0] for p in top.proposals] == expected_first.topk(3).indices.tolist()
    for proposal in top.proposals:
        assert proposal.log_prob == pytest.approx(
            float(expected_first[proposal.token_ids[0]]), abs=ATOL
        )
        torch.testing.assert_close(
            proposal.state.next_log_probs,
            full_log_probs(model, ids + list(proposal.token_ids))[-1],
            atol=ATOL,
            rtol=0,
        )
    assert 1 <= len(top.rollout) <= 6

    child = top.proposals[1]
    request = ExpandRequest(
        length=4, mode="sample", count=3, greedy=True, top_k=10, rollout_tokens=5
    )
    deeper = backend.expand([root, child.state], request, gen)
    assert deeper.proposals[0].greedy
    base = ids + list(child.token_ids)
    for proposal in deeper.proposals:
        full = full_log_probs(model, base + list(proposal.token_ids))
        positions = range(len(base) - 1, len(base) - 1 + len(proposal.token_ids))
        # Priors are read under the sampling distribution: top-10, renormalised.
        expected = sum(
            prior(full[pos], 10, 1.0, tok)
            for pos, tok in zip(positions, proposal.token_ids, strict=True)
        )
        assert proposal.log_prob == pytest.approx(expected, abs=ATOL)
        torch.testing.assert_close(proposal.state.next_log_probs, full[-1], atol=ATOL, rtol=0)
        if proposal.greedy:
            assert list(proposal.token_ids) == [int(full[pos].argmax()) for pos in positions]


def test_committed_prefix_is_concatenated_not_reencoded(tiny_llama, backend) -> None:
    model, tokenizer = tiny_llama
    ids = prompt_ids(tokenizer)
    root = backend.start(ids)
    gen = torch.Generator().manual_seed(1)
    child = backend.expand([root], ExpandRequest(length=1, mode="top", count=2), gen).proposals[0]
    committed = backend.advance(root, child.state)
    before = backend.counters.tokens_processed
    request = ExpandRequest(length=3, mode="sample", count=2, greedy=True)
    grand = backend.expand([committed], request, gen).proposals
    # One greedy and two sampled rows, three tokens each: only those 9 tokens are fed,
    # never the prompt or the committed token again.
    assert backend.counters.tokens_processed - before == 3 * 3
    for proposal in grand:
        assert context_length(proposal.state.kv) == len(proposal.token_ids)
        if proposal.token_ids[-1] in backend.eos_token_ids:
            continue  # the answer ends: nothing follows, cut at EOS
        full = full_log_probs(model, ids + list(child.token_ids) + list(proposal.token_ids))
        torch.testing.assert_close(proposal.state.next_log_probs, full[-1], atol=ATOL, rtol=0)


def test_vanilla_equals_transformers_generate(tiny_llama, backend) -> None:
    model, tokenizer = tiny_llama
    ids = prompt_ids(tokenizer)
    ours = backend.vanilla(ids, 12, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        theirs = model.generate(
            torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=1, pad_token_id=0
        )
    assert ours == theirs[0, len(ids) :].tolist()[: len(ours)]


def test_judge_with_cached_template_matches_full_encode(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    template = load_template("harmless")
    judge = HFJudge(model, tokenizer, template, Counters())
    prompt, responses = "How do I bake bread?", ["Mix flour and water.", "No."]
    scores = judge.score(prompt, responses)
    label_ids = [
        label_token_id(tokenizer, template.answer_prefix, label) for label in template.labels
    ]
    fixed = tokenizer.encode(template.fixed_text(), add_special_tokens=True)
    for response, score in zip(responses, scores, strict=True):
        good = []
        for good_first in (True, False):
            variable = tokenizer.encode(
                template.variable_text(prompt, response, good_first), add_special_tokens=False
            )
            first = full_log_probs(model, fixed + variable)[-1][label_ids].softmax(-1)[0]
            good.append(float(first) if good_first else 1 - float(first))
        assert score == pytest.approx(good[0] + good[1] - 1, abs=ATOL)


def test_multi_token_label_is_a_clear_error(tiny_llama) -> None:
    _, tokenizer = tiny_llama
    with pytest.raises(TemplateError, match="not a single token"):
        label_token_id(tokenizer, "The answer is: ", "Yes")


def test_model_evaluator_caches_by_text_and_hard_votes(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    soft = ModelEvaluator(model, tokenizer, "truthful")
    direct = HFJudge(model, tokenizer, load_template("truthful"), Counters())
    responses = ["Water boils at 100 C at sea level.", "The moon is cheese."]
    assert soft.score("Tell me a fact.", responses) == pytest.approx(
        direct.score("Tell me a fact.", responses), abs=ATOL
    )
    calls = soft.counters.forward_calls
    soft.score("Tell me a fact.", responses[:1])
    assert soft.counters.forward_calls == calls and soft.counters.cache_hits == 1
    hard = ModelEvaluator(model, tokenizer, "truthful", votes="hard")
    assert set(hard.score("Tell me a fact.", responses)) <= {-1.0, 0.0, 1.0}


def test_judge_reuses_the_conversation_prefix_and_still_matches(tiny_llama) -> None:
    """Judging a longer answer after a shorter one re-reads only the new tokens."""
    model, tokenizer = tiny_llama
    template = load_template("harmless")
    counters = Counters()
    judge = HFJudge(model, tokenizer, template, counters)
    prompt = "How do I bake bread?"
    judge.score(prompt, ["Mix flour and water"])
    before = counters.tokens_processed
    [reused] = judge.score(prompt, ["Mix flour and water, then knead."])
    question = max(len(template.question_text(good_first)) for good_first in (True, False))
    new_tokens = len(", then knead.") + question  # one token per character
    assert counters.tokens_processed - before == 2 * new_tokens
    [fresh] = HFJudge(model, tokenizer, template, Counters()).score(
        prompt, ["Mix flour and water, then knead."]
    )
    assert reused == pytest.approx(fresh, abs=ATOL)


def test_judgments_of_searches_in_turn_each_reuse_their_own_conversation(tiny_llama) -> None:
    """Two searches judged alternately (as under a shared engine) do not evict each other."""
    model, tokenizer = tiny_llama
    template = load_template("harmless")
    counters = Counters()
    judge = HFJudge(model, tokenizer, template, counters, votes="soft")
    bread, tea = "How do I bake bread?", "How do I make tea?"
    judge.score(bread, ["Mix flour and water"])
    judge.score(tea, ["Boil the water"])
    before = counters.tokens_processed
    [bread_score] = judge.score(bread, ["Mix flour and water, then knead."])
    question = max(len(template.question_text(good_first)) for good_first in (True, False))
    assert counters.tokens_processed - before == 2 * (len(", then knead.") + question)
    before = counters.tokens_processed
    [tea_score] = judge.score(tea, ["Boil the water, then steep."])
    assert counters.tokens_processed - before == 2 * (len(", then steep.") + question)
    fresh = HFJudge(model, tokenizer, template, Counters(), votes="soft")
    assert bread_score == pytest.approx(
        fresh.score(bread, ["Mix flour and water, then knead."])[0], abs=ATOL
    )
    assert tea_score == pytest.approx(
        fresh.score(tea, ["Boil the water, then steep."])[0], abs=ATOL
    )


def test_responses_judged_together_score_as_one_by_one(tiny_llama) -> None:
    """A round's responses in one forward call (as on a GPU) score as judged one at a time."""
    model, tokenizer = tiny_llama
    template = load_template("harmless")
    prompt = "How do I bake bread?"
    responses = ["Mix flour and water.", "No.", "Mix flour, salt and yeast.", "Ask a baker."]
    alone = HFJudge(model, tokenizer, template, Counters(), votes="soft", max_rows=2)
    counters = Counters()
    together = HFJudge(model, tokenizer, template, counters, votes="soft", max_rows=6)
    together.fixed_cache()
    before = counters.forward_calls
    assert together.score(prompt, responses) == pytest.approx(
        alone.score(prompt, responses), abs=ATOL
    )
    assert counters.forward_calls - before == 2  # 8 rows, at most 6 a call


def test_cleared_caches_judge_and_embed_again(tiny_llama) -> None:
    from rain_search.embeddings import HiddenStateEmbedder

    model, tokenizer = tiny_llama
    evaluator = ModelEvaluator(model, tokenizer, "truthful")
    embedder = HiddenStateEmbedder(model, tokenizer)
    for part, call in ((evaluator, evaluator.score), (embedder, embedder.embed)):
        args = ("Tell me a fact.", ["The moon is cheese."]) if part is evaluator else (["a b"],)
        call(*args)
        calls = part.counters.forward_calls
        call(*args)
        assert part.counters.forward_calls == calls  # cached
        part.clear_cache()
        call(*args)
        assert part.counters.forward_calls > calls


def prior(log_probs: torch.Tensor, top_k: int, temperature: float, token: int) -> float:
    """A token's log-prob under the sampling distribution (top-k at T, renormalised)."""
    return float(sampling(log_probs[None], top_k, temperature).log_prob(torch.tensor([token]))[0])


def test_a_roomy_cache_layer_appends_past_its_room_like_a_dynamic_one() -> None:
    keys, values = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    room = [torch.zeros(2, 3, 6, 4), torch.zeros(2, 3, 6, 4)]
    room[0][:, :, :5], room[1][:, :, :5] = keys, values
    roomy = roomy_cache([(room[0], room[1])], 5)
    plain = DynamicCache(ddp_cache_data=[(keys.clone(), values.clone())])
    for _ in range(4):  # one fits the spare position, then the buffer must grow
        new_k, new_v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
        got, want = roomy.update(new_k, new_v, 0), plain.update(new_k, new_v, 0)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert roomy.get_seq_length() == 9


def test_top_k_sampling_on_its_support_draws_what_the_whole_vocabulary_draws() -> None:
    log_probs = torch.randn(6, 500).log_softmax(-1)
    dist = sampling(log_probs, 15, 0.7)
    assert dist.ids is not None and dist.ids.shape == (6, 15)
    logits = log_probs / 0.7
    kth = logits.topk(15, dim=-1).values[:, -1:]
    dense = logits.masked_fill(logits < kth, float("-inf")).log_softmax(-1)
    uniform = torch.rand(6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cdf = dense.exp().cumsum(-1, dtype=torch.float64)
    want = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(-1)
    assert dist.invert(uniform).tolist() == want.tolist()
    assert dist.most_likely().tolist() == dense.argmax(-1).tolist()
    torch.testing.assert_close(dist.log_prob(want), dense.gather(-1, want[:, None])[:, 0])


def test_prompts_encoded_in_one_call_hold_what_each_holds_alone(tiny_llama, backend) -> None:
    _, tokenizer = tiny_llama
    prompts = [tokenizer.encode(text) for text in ("Hello there, friend", "A", "Why not?")]
    before = backend.counters.forward_calls
    together = backend.start_many(prompts)
    assert backend.counters.forward_calls == before + 1
    store = backend.store
    for ids, state in zip(prompts, together, strict=True):
        alone = backend.start(ids)
        assert context_length(state.kv) == len(ids)
        torch.testing.assert_close(state.next_log_probs, alone.next_log_probs, atol=ATOL, rtol=0)
        ours = store.read(context_positions(state.kv))
        theirs = store.read(context_positions(alone.kv))
        for (k1, v1), (k2, v2) in zip(ours, theirs, strict=True):
            torch.testing.assert_close(k1, k2, atol=ATOL, rtol=0)
            torch.testing.assert_close(v1, v2, atol=ATOL, rtol=0)


def test_a_model_cast_between_searches_gets_a_store_of_its_dtype(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    half = copy.deepcopy(model)
    backend = HFBackend(half, tokenizer)
    ids = tokenizer.encode("Hello")
    request = ExpandRequest(length=2, mode="sample", count=2)
    first = backend.expand([backend.start(ids)], request, torch.Generator().manual_seed(0))
    del first
    gc.collect()  # the first search's nodes are gone: the store holds nothing
    half.to(torch.bfloat16)
    again = backend.expand([backend.start(ids)], request, torch.Generator().manual_seed(0))
    assert again.proposals and backend.store.data is not None
    assert backend.store.data.dtype == torch.bfloat16


@pytest.mark.parametrize("chunk", [16 * 2**20, 1], ids=["one-gather", "context-by-context"])
def test_rows_sharing_a_context_are_written_as_each_alone(chunk, monkeypatch) -> None:
    """The pool reads a context shared by several rows once; every row still gets its
    own context ending at the edge and zeros before it, whatever the mix of lengths,
    gathered in one piece or in pieces."""
    from rain_search.backends import pool as pools
    from rain_search.backends.pool import KVPool
    from rain_search.backends.store import KVStore

    monkeypatch.setattr(pools, "CHUNK_BYTES", chunk)

    store = KVStore()
    store.data = torch.randn(2, 2, 40, 3, 4)
    store._free = []
    pool = KVPool(store, slots=12, columns=16)
    pool.data.fill_(float("nan"))  # a cell the write forgets stays NaN
    shared, other = [5, 6, 7, 8], [30, 31]
    contexts = [shared, other, shared, [], [1, 2, 3, 4, 9], shared, other, [0]]
    slots = [7, 0, 3, 1, 2, 9, 4, 11]
    pool.write(slots, contexts, 10, store)
    for slot, context in zip(slots, contexts, strict=True):
        row = pool.data[:, :, slot, :10]
        assert torch.equal(
            row[:, :, : 10 - len(context)], torch.zeros_like(row[:, :, : 10 - len(context)])
        )
        assert torch.equal(row[:, :, 10 - len(context) :], store.data[:, :, context])


def test_right_aligned_cells_end_where_each_span_ends() -> None:
    from rain_search.backends.pool import right_aligned

    cells = right_aligned(torch.tensor([10, 20, 35]), [3, 0, 2])
    assert cells.tolist() == [7, 8, 9, 33, 34]


def test_moving_rows_in_pieces_copies_every_row() -> None:
    from rain_search.backends import pool as pools
    from rain_search.backends.store import KVStore

    store = KVStore()
    store.data = torch.zeros(2, 2, 1, 3, 4)
    pool = pools.KVPool(store, slots=8, columns=6)
    pool.data.copy_(torch.randn_like(pool.data))
    before = pool.data.clone()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pools, "CHUNK_BYTES", 1)  # one row a piece
        pool.move([7, 6, 5], [0, 2, 3], 4)
    for source, target in [(7, 0), (6, 2), (5, 3)]:
        assert torch.equal(pool.data[:, :, target, :4], before[:, :, source, :4])
    assert torch.equal(pool.data[:, :, :, 4:], before[:, :, :, 4:])


def test_pieces_are_a_cpu_matter() -> None:
    """On a CPU a gather is cut to CHUNK_BYTES; elsewhere the allocator caches blocks."""
    from rain_search.backends import pool as pools
    from rain_search.backends.store import KVStore

    for device, rows in (("cpu", pools.CHUNK_BYTES // (100 * 2 * 2 * 8 * 64 * 4)), ("meta", 16)):
        store = KVStore()
        store.data = torch.empty(2, 2, 4, 8, 64, device=device)
        assert pools.KVPool(store, slots=16, columns=128)._rows_per_chunk(100) == rows
