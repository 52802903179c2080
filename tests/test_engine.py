"""The batched engine: parallel leaves, the slot decoder, many searches per forward call."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from engine_fakes import ScriptedBackend, tree_trace
from test_search import WordEmbedder, penalise_bad

from rain_search import RainConfig
from rain_search.admission import (
    GPU_ROW_SHARE,
    GPU_ROWS,
    ROW_COPIES,
    Budget,
    Footprint,
    default_budget,
    gpu_rows,
)
from rain_search.backends.base import ExpandRequest
from rain_search.backends.hf import HFBackend
from rain_search.backends.slots import SlotDecoder
from rain_search.backends.store import context_positions
from rain_search.errors import ConfigError
from rain_search.evaluators import FunctionEvaluator
from rain_search.explain import widest_round
from rain_search.policy import TreeSearch
from rain_search.search import RainGenerator, run_alone
from rain_search.stats import Counters
from rain_search.tree import Node, ValueRange, add_pending, select_leaf

TRACE = Path(__file__).parent / "data" / "sequential_trace.json"


def graded(text: str) -> float:
    words = text.split()
    return max(-1.0, 1.0 - 0.7 * words.count("bad") - 0.2 * words.count("fine"))


# The cases the trace was recorded on, with the search as it was before the engine
# (one leaf per iteration, called inline): same configs, judges and prompt.
CASES = {
    "paper": (RainConfig(max_new_tokens=20, seed=3), penalise_bad),
    "fast": (
        # the preset as recorded, before it gained commit_margin and a rewind (issue 31)
        RainConfig.preset("fast").merged(
            max_new_tokens=24, seed=1, parallel_leaves=1, commit_margin=None, max_rewinds=0
        ),
        graded,
    ),
    "hopeless": (
        RainConfig(max_new_tokens=6, num_children=3, max_children=6, max_iterations=20),
        lambda text: -1.0,
    ),
}


class TracedSearch(TreeSearch):
    """Records each step's whole tree (tokens, visits, values) when it commits."""

    trace: list[dict[str, object]]

    def step_stats(self, root, child, text, token_ids):  # type: ignore[no-untyped-def]
        stats = super().step_stats(root, child, text, token_ids)
        self.trace.append(
            {
                "tokens": list(token_ids),
                "iterations": stats.iterations,
                "early": stats.early_stopped,
                "tree": tree_trace(root),
            }
        )
        return stats


def traced_run(config: RainConfig, judge) -> TracedSearch:  # type: ignore[no-untyped-def]
    search = TracedSearch(ScriptedBackend(), FunctionEvaluator(judge), WordEmbedder(), config, "p")
    search.trace = []
    run_alone(search, [3, 3, 3])
    return search


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_leaf_at_a_time_decides_exactly_as_the_sequential_search(case: str) -> None:
    # Every node's visits and value at every commit, the commits and the iteration
    # counts match the trace recorded from the sequential search (K=1).
    config, judge = CASES[case]
    assert traced_run(config, judge).trace == json.loads(TRACE.read_text())[case]


class LetterEmbedder:
    """Letter counts: any text embeds, alike texts are alike."""

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.full((len(texts), 26), 1e-3)
        for row, text in enumerate(texts):
            for letter in text.lower():
                if "a" <= letter <= "z":
                    out[row, ord(letter) - ord("a")] += 1
        return torch.nn.functional.normalize(out, dim=-1)


@pytest.mark.parametrize("leaves", [1, 3])
def test_prefetched_expansions_change_no_decision_and_save_calls(tiny_llama, leaves) -> None:
    # The whole tree at every commit (visits, values, iterations) is the same with
    # expansions started ahead as without; only the calls they took differ.
    model, tokenizer = tiny_llama
    prompt = tokenizer.encode("Tell me a story")

    def traced(speculative: int) -> TracedSearch:
        config = RainConfig(
            max_new_tokens=6, seed=3, parallel_leaves=leaves, speculative_leaves=speculative
        )
        judge = FunctionEvaluator(lambda text: max(-1.0, 0.5 - 0.2 * text.count("e")))
        search = TracedSearch(HFBackend(model, tokenizer), judge, LetterEmbedder(), config, "p")
        search.trace = []
        run_alone(search, prompt)
        return search

    plain, ahead = traced(0), traced(4)
    assert ahead.trace == plain.trace
    assert ahead.answer == plain.answer
    assert ahead.cost.forward_calls < plain.cost.forward_calls


def test_parallel_leaves_spread_over_the_tree_and_keep_the_budget() -> None:
    config = RainConfig.preset("fast").merged(max_new_tokens=24, seed=1, parallel_leaves=6)
    backend = ScriptedBackend()
    search = TreeSearch(backend, FunctionEvaluator(graded), WordEmbedder(), config, "p")
    result = run_alone(search, [3, 3, 3])
    assert result.completion_tokens == 24
    for step in result.steps:
        # the step stops starting leaves once it has its visits; the ones running finish
        assert step.iterations <= max(config.min_fresh_iterations, config.max_iterations) + 5
    assert all(node.pending == 0 and not node.busy for node in search.root.walk())  # type: ignore[union-attr]


def test_a_busy_or_pending_leaf_is_skipped() -> None:
    root = Node((), n=1, fn=1)
    first = Node((1,), root, 1, p=0.5)
    second = Node((2,), root, 1, p=0.5)
    root.children = [first, second]
    bounds = ValueRange()
    assert select_leaf(root, 2.0, bounds) == [root, first]  # a tie: the first wins
    first.busy = True  # being expanded by another iteration
    assert select_leaf(root, 2.0, bounds) == [root, second]
    second.busy = True
    assert select_leaf(root, 2.0, bounds) is None  # nothing free: wait for running work
    first.busy = second.busy = False
    first.n, first.fn, first.q = 1, 1, 1.0  # PUCT 1 + 2·0.5·1/2 = 1.5 against 1.0
    assert select_leaf(root, 2.0, bounds) == [root, first]
    add_pending([root, first], 1)  # a visit in flight on the leaf itself: it is not free
    assert select_leaf(root, 2.0, bounds) == [root, second]
    add_pending([root, first], -1)
    assert select_leaf(root, 2.0, bounds) == [root, first]


def test_the_slot_decoder_proposes_what_expand_proposes(tiny_llama) -> None:
    # Three leaves with different prompts and requests decoded together, one joining
    # two calls late, give the same sets, priors, caches and rollouts as one by one.
    model, tokenizer = tiny_llama
    backend = HFBackend(model, tokenizer)
    roots = [backend.start(tokenizer.encode(text)) for text in ("Hello there, how", "A", "Why?")]
    requests = [
        ExpandRequest(length=4, mode="sample", count=3, greedy=True, rollout_tokens=12),
        ExpandRequest(length=1, mode="top", count=5, rollout_tokens=6),
        ExpandRequest(length=2, mode="sample", count=2),
    ]
    alone = [
        backend.expand([root], request, torch.Generator().manual_seed(seed))
        for seed, (root, request) in enumerate(zip(roots, requests, strict=True))
    ]
    decoder, counters = SlotDecoder(backend), Counters()
    jobs = [decoder.add([roots[0]], requests[0], torch.Generator().manual_seed(0), counters)]
    decoder.call()
    decoder.call()
    for seed in (1, 2):
        jobs.append(
            decoder.add(
                [roots[seed]], requests[seed], torch.Generator().manual_seed(seed), counters
            )
        )
    calls = 2
    while decoder.live:
        decoder.call()
        calls += 1
    assert counters.forward_calls == calls < sum(1 + r.rollout_tokens + r.length for r in requests)
    for solo, job in zip(alone, jobs, strict=True):
        assert_same_expansion(job, solo)


def assert_same_expansion(job, solo) -> None:
    assert job.result is not None
    assert job.result.rollout == solo.rollout
    assert [p.token_ids for p in job.result.proposals] == [p.token_ids for p in solo.proposals]
    for ours, theirs in zip(job.result.proposals, solo.proposals, strict=True):
        assert ours.token_log_probs == pytest.approx(theirs.token_log_probs, abs=1e-4)
        assert torch.allclose(ours.state.next_log_probs, theirs.state.next_log_probs, atol=1e-4)
        store = job.result.proposals[0].state.kv[0].block.store
        ours_kv = store.read(context_positions(ours.state.kv))
        theirs_kv = store.read(context_positions(theirs.state.kv))
        for (k1, v1), (k2, v2) in zip(ours_kv, theirs_kv, strict=True):
            assert k1.shape == k2.shape and torch.allclose(k1, k2, atol=1e-4)
            assert torch.allclose(v1, v2, atol=1e-4)


def test_rows_join_free_slots_and_move_only_when_a_context_does_not_fit(tiny_llama) -> None:
    # A short job leaves holes at the front of the batch, the next job fills them in place
    # (same pool, same rows); a context longer than the right edge moves the rows; every job
    # still proposes what expanding it alone proposes.
    model, tokenizer = tiny_llama
    backend = HFBackend(model, tokenizer)
    texts = ("Once upon", "Tell me more", "Hi", "A much longer prompt than any of the others here")
    roots = [backend.start(tokenizer.encode(text)) for text in texts]
    requests = [
        ExpandRequest(length=1, mode="sample", count=3),
        ExpandRequest(length=6, mode="sample", count=2),
        ExpandRequest(length=2, mode="sample", count=3),
        ExpandRequest(length=2, mode="sample", count=2, rollout_tokens=4),
    ]
    alone = [
        backend.expand([root], request, torch.Generator().manual_seed(seed))
        for seed, (root, request) in enumerate(zip(roots, requests, strict=True))
    ]
    decoder, counters = SlotDecoder(backend), Counters()

    def add(i: int):
        return decoder.add([roots[i]], requests[i], torch.Generator().manual_seed(i), counters)

    jobs = [add(0), add(1)]
    decoder.call()  # job 0 (one token) is done: slots 0..2 are free, job 1 keeps 3..4
    assert jobs[0].result is not None and jobs[1].result is None
    layout = decoder.layout
    pool = layout.pool
    jobs.append(add(2))
    decoder.call()
    assert layout.pool is pool and [row.job for row in layout.rows] == [jobs[2]] * 3 + [jobs[1]] * 2
    width = layout.width
    jobs.append(add(3))
    decoder.call()
    assert layout.width > width + 1  # the long prompt moved every row right
    while decoder.live:
        decoder.call()
    for solo, job in zip(alone, jobs, strict=True):
        assert_same_expansion(job, solo)


@pytest.fixture(scope="module")
def generator(tiny_llama) -> RainGenerator:
    model, tokenizer = tiny_llama
    config = RainConfig.preset("fast").merged(max_new_tokens=12, parallel_leaves=4)
    return RainGenerator(model, tokenizer, config, evaluator=lambda t: -t.count("e") / 5)


PROMPTS = [
    "Hello",
    "Tell me a story",
    "Why is the sky blue?",
    "One two",
    "A",
    "Go on",
    "Hm",
    "Yes?",
]


def test_concurrent_searches_give_their_solo_answers(generator: RainGenerator) -> None:
    solo = [generator.generate(p, seed=seed) for seed, p in enumerate(PROMPTS)]
    with ThreadPoolExecutor(8) as pool:
        together = list(
            pool.map(lambda args: generator.generate(args[1], seed=args[0]), enumerate(PROMPTS))
        )
    batch = generator.generate_batch(PROMPTS[:4], seed=0)
    assert [r.token_ids for r in together] == [r.token_ids for r in solo]
    assert [r.stats["forward_calls"] for r in together] == [r.stats["forward_calls"] for r in solo]
    assert batch[0].token_ids == solo[0].token_ids
    assert all(r.completion_tokens > 0 for r in batch)


def test_a_stream_can_be_read_from_a_different_thread_at_every_step(generator) -> None:
    stream = generator.stream("Tell me a story", seed=3)
    with ThreadPoolExecutor(4) as pool:
        steps = []
        while (step := pool.submit(next, stream, None).result()) is not None:
            steps.append(step)
    assert stream.result is not None
    assert "".join(s.text for s in steps) == stream.result.text
    assert stream.result.token_ids == generator.generate("Tell me a story", seed=3).token_ids


def test_cancelling_one_search_leaves_the_others_running(generator) -> None:
    stopped = generator.stream("Tell me a story", seed=1, max_new_tokens=64)
    next(stopped)
    other = generator.stream("Hello", seed=2).start()
    stopped.close()
    assert list(stopped) == []
    list(other)
    assert other.result is not None and other.result.completion_tokens > 0


def test_the_reading_thread_runs_the_search_and_no_engine_thread_is_left(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    judged_on: set[str] = set()

    def judge(text: str) -> float:
        judged_on.add(threading.current_thread().name)
        return 0.0

    generator = RainGenerator(model, tokenizer, "fast", evaluator=judge)
    before = set(threading.enumerate())
    assert generator.generate("Hi", max_new_tokens=3).completion_tokens > 0
    assert judged_on == {threading.current_thread().name}
    assert set(threading.enumerate()) <= before
    with ThreadPoolExecutor(2, thread_name_prefix="reader") as pool:
        answers = list(pool.map(lambda p: generator.generate(p, max_new_tokens=3), ["Hi", "Yo"]))
    assert all(answer.completion_tokens > 0 for answer in answers)
    assert judged_on - {threading.current_thread().name} <= {"reader_0", "reader_1"}


def test_explain_shows_which_leaves_ran_together(generator, tmp_path) -> None:
    result = generator.generate("Tell me a story", seed=4)
    text = result.explain()
    assert "leaves run together (calls " in text
    widest = max(widest_round(step.leaves) for step in result.steps)
    assert 1 < widest <= 4, "with K=4 up to four leaves share forward calls"
    result.plot_rounds(str(tmp_path / "rounds.png"))
    assert (tmp_path / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    solo = RainGenerator(
        generator.model,
        generator.tokenizer,
        generator.config.merged(parallel_leaves=1),
        evaluator=lambda t: -t.count("e") / 5,
    ).generate("Tell me a story", seed=4)
    assert "leaves run together" not in solo.explain()


def test_a_batch_over_the_budget_waits_its_turn_and_answers_as_alone(tiny_llama) -> None:
    """With room for one search's rows, searches run one after another (never more rows in
    a call than the budget, beyond the one search always admitted) with their solo answers."""
    model, tokenizer = tiny_llama
    config = RainConfig.preset("fast").merged(max_new_tokens=8, parallel_leaves=2)
    judge = lambda t: -t.count("e") / 5  # noqa: E731
    narrow = RainGenerator(model, tokenizer, config, evaluator=judge, max_batch_rows=10)
    wide = RainGenerator(model, tokenizer, config, evaluator=judge)
    search_rows = 2 * (4 + 1)  # K leaves x (candidates + rollout row)
    seen: list[int] = []
    step = narrow.scheduler.engine.decoder.call  # type: ignore[union-attr]

    def counting_step() -> list[object]:
        seen.append(len(narrow.scheduler.engine.tasks))
        return step()

    narrow.scheduler.engine.decoder.call = counting_step  # type: ignore[method-assign,union-attr]
    queued = narrow.generate_batch(PROMPTS[:4], seed=0)
    assert narrow.scheduler.engine.budget.rows == search_rows
    assert max(seen) == 1, "a second search was let in beside the first"
    assert [r.token_ids for r in queued] == [
        r.token_ids for r in wide.generate_batch(PROMPTS[:4], seed=0)
    ]
    assert queued[2].token_ids == wide.generate(PROMPTS[2], seed=0).token_ids


def test_the_budget_admits_in_order_and_always_one() -> None:
    budget = Budget(rows=50, kv_tokens=1000)
    small, big = Footprint(rows=20, kv_tokens=400), Footprint(rows=80, kv_tokens=5000)
    assert budget.admits([], big), "a search larger than the budget still runs alone"
    assert budget.admits([small], small)
    assert not budget.admits([small, small], small)  # rows
    assert not budget.admits([Footprint(rows=1, kv_tokens=900)], small)  # key/value tokens
    with pytest.raises(ConfigError, match="max_batch_rows"):
        Budget(rows=0, kv_tokens=10)


def test_a_search_cancelled_while_queued_never_starts(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    generator = RainGenerator(model, tokenizer, "fast", evaluator=lambda t: 0.0, max_batch_rows=1)
    first = generator.stream("Hello", max_new_tokens=6).start()
    waiting = generator.stream("Tell me a story", max_new_tokens=6).start()
    next(first)
    assert generator.scheduler.engine.queued, "the second search should wait for the first"
    waiting.close()
    list(first)
    assert list(waiting) == []
    assert not generator.scheduler.engine.queued and not generator.scheduler.engine.tasks


def test_default_budgets_follow_the_device_and_the_model(tiny_llama) -> None:
    model, _ = tiny_llama
    budget = default_budget(model.config, torch.device("cpu"), None, None)
    per_token = 2 * 2 * 2 * 16 * 4  # K and V x layers x kv heads x head dim x fp32
    assert budget.rows == 320
    assert budget.kv_tokens == 4 * 2**30 // per_token
    assert default_budget(model.config, torch.device("cpu"), 7, 9) == Budget(rows=7, kv_tokens=9)


def test_a_gpu_budget_holds_the_rows_whose_logits_fit_free_memory(tiny_llama, monkeypatch) -> None:
    model, _ = tiny_llama
    free = 80 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 2 * free))
    budget = default_budget(model.config, torch.device("cuda"), None, None)
    per_token = 2 * 2 * 2 * 16 * 2  # K and V x layers x kv heads x head dim x 16-bit
    assert budget == Budget(rows=GPU_ROWS, kv_tokens=int(free * 0.5 // per_token))
    big_vocab = model.config.__class__(**{**model.config.to_dict(), "vocab_size": 128_256})
    row = ROW_COPIES * 4 * 128_256  # what one row's logits and their copies take
    assert gpu_rows(big_vocab, 7 * 2**30) == int(7 * 2**30 * GPU_ROW_SHARE // row) < 300
    assert gpu_rows(big_vocab, 0) == 1
    assert default_budget(model.config, torch.device("cuda"), 5, None).rows == 5


def test_a_generator_with_another_judge_shares_the_engine_and_its_calls(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    config = RainConfig.preset("fast").merged(max_new_tokens=8, parallel_leaves=2)
    base = RainGenerator(model, tokenizer, config, evaluator=lambda t: -t.count("e") / 5)
    twin = base.with_judge(lambda t: -t.count("a") / 5, seed=5)
    assert twin.scheduler is base.scheduler and twin.backend is base.backend
    assert twin.config.seed == 5 and base.config.seed == 0
    alone = [base.generate("Tell me a story"), twin.generate("Tell me a story")]
    calls = base.backend.counters.forward_calls
    streams = [base.stream("Tell me a story").start(), twin.stream("Tell me a story").start()]
    together = []
    for stream in streams:
        list(stream)
        together.append(stream.result)
    shared_calls = base.backend.counters.forward_calls - calls
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert alone[0].token_ids != alone[1].token_ids, "the two judges should steer apart"
    assert shared_calls < sum(r.stats["forward_calls"] for r in alone)


def test_time_waiting_for_room_is_not_charged_to_the_timeout(tiny_llama) -> None:
    model, tokenizer = tiny_llama

    def slow(text: str) -> float:
        time.sleep(0.1)
        return 0.0

    first = RainGenerator(
        model, tokenizer, "fast", evaluator=slow, embedder="hidden", max_batch_rows=1
    )
    second = first.with_judge(lambda t: 0.0, timeout=2.0)
    long = first.stream("Tell me a story", max_new_tokens=10).start()
    short = second.stream("Hello", max_new_tokens=4).start()
    list(long)
    list(short)
    assert long.result is not None and long.result.wall_time > 3.0, "the wait must outlast 2 s"
    assert short.result is not None and short.result.finish_reason != "budget"


def test_batch_invariant_searches_run_alone_in_every_call_and_give_their_solo_answers(
    tiny_llama,
) -> None:
    # In bfloat16 a row's numbers depend on the shapes of the call it is in. With
    # batch_invariant=True every call a search makes while others run has the shape it
    # has alone (the same rows, the same padding), so its answer is its solo answer.
    model, tokenizer = tiny_llama
    half = copy.deepcopy(model).to(torch.bfloat16)
    config = RainConfig.preset("fast").merged(max_new_tokens=8, parallel_leaves=4)
    generator = RainGenerator(
        half,
        tokenizer,
        config,
        evaluator=lambda t: -t.count("e") / 5,
        embedder=LetterEmbedder(),
        batch_invariant=True,
    )
    shapes: list[tuple[int, ...]] = []
    forward = generator.backend.forward

    def recorded(input_ids, cache, attention_mask=None, position_ids=None):  # type: ignore[no-untyped-def]
        width = () if attention_mask is None else (attention_mask.shape[1],)
        shapes.append((*input_ids.shape, *width))
        return forward(input_ids, cache, attention_mask=attention_mask, position_ids=position_ids)

    generator.backend.forward = recorded  # type: ignore[method-assign]
    prompts = PROMPTS[:4]
    solo, alone = [], Counter[tuple[int, ...]]()
    for seed, prompt in enumerate(prompts):
        solo.append(generator.generate(prompt, seed=seed))
        alone.update(shapes)
        shapes.clear()
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda a: generator.generate(a[1], seed=a[0]), enumerate(prompts)))
    assert Counter(shapes) == alone
    assert [r.token_ids for r in together] == [r.token_ids for r in solo]


def test_a_failed_shared_prefill_is_retried_alone_and_fails_only_its_search(
    generator: RainGenerator, monkeypatch
) -> None:
    # The prompts of searches admitted together are encoded in one call; when that call
    # fails, each is encoded alone, so the error reaches only the search that causes it.
    backend = generator.backend
    start = backend.start

    tried: list[int] = []

    def shared(prompts):  # type: ignore[no-untyped-def]
        tried.append(len(prompts))
        raise RuntimeError("the shared call broke")

    def alone(prompt_ids):  # type: ignore[no-untyped-def]
        if len(prompt_ids) == len(generator.encode("Hm", None)[0]):
            raise ValueError("this prompt breaks the model")
        return start(prompt_ids)

    monkeypatch.setattr(backend, "start_many", shared)
    monkeypatch.setattr(backend, "start", alone)
    streams = [generator.stream(p, seed=0) for p in ("Tell me a story", "Hm")]
    for stream in streams:
        stream.start()
    told = "".join(step.text for step in streams[0])
    assert told == generator.generate("Tell me a story", seed=0).text
    with pytest.raises(ValueError, match="breaks the model"):
        list(streams[1])
    assert tried == [2]
