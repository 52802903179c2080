"""The search loop on a scripted fake backend: behaviour with exact counts, no model."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from driving import search_once

from rain_search.backends.base import ExpandRequest, Expansion, Proposal
from rain_search.config import RainConfig
from rain_search.errors import Cancelled
from rain_search.evaluators import FunctionEvaluator
from rain_search.policy import StepProgress, TreeSearch
from rain_search.result import StepStats
from rain_search.search import run_alone, steps_alone
from rain_search.stats import Counters
from rain_search.tree import Node, all_judged_bad, best_child

WORDS = ["<eos>", "good", "bad", "fine", "nice", "kind", "."]
EOS, GOOD, BAD = 0, 1, 2
# The fake model's favourite token is "bad": vanilla decoding would say it.
RANKING = [BAD, GOOD, 3, 4, 5, 6]


class FakeBackend:
    """Tokens are words; the greedy continuation is always "bad"; states are token tuples."""

    def __init__(self, eos_after: int | None = None) -> None:
        self.counters = Counters()
        self.eos_token_ids = frozenset({EOS})
        self.eos_after = eos_after
        self.requests: list[ExpandRequest] = []

    def start(self, prompt_ids: Sequence[int]) -> tuple[int, ...]:
        self.counters.count_forward(1, len(prompt_ids))
        return ()

    def advance(self, root: tuple[int, ...], child: tuple[int, ...]) -> tuple[int, ...]:
        return root + child

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(WORDS[t] for t in token_ids if t != EOS)

    def expand(
        self, path: Sequence[tuple[int, ...]], request: ExpandRequest, generator: torch.Generator
    ) -> Expansion:
        self.requests.append(request)
        prefix = tuple(t for state in path for t in state)
        rows: list[tuple[tuple[int, ...], bool]] = []
        if request.mode == "top":
            excluded = {ids[0] for ids in request.exclude}
            rows = [((t,), False) for t in RANKING if t not in excluded][: request.count]
        else:
            if request.greedy:
                rows.append(((BAD,) * request.length, True))
            for attempt in range(request.count):
                rows.append((self.sample(prefix, attempt, request, generator), False))
        if self.eos_after is not None and len(prefix) >= self.eos_after:
            rows = [((EOS,), False)]
        proposals, seen, sampled = [], set(request.exclude), 0
        for rank, (ids, greedy) in enumerate(rows):
            full = request.keep is not None and sampled >= request.keep and not greedy
            if ids not in seen and not full:
                seen.add(ids)
                sampled += not greedy
                proposals.append(Proposal(ids, (-1.0 - rank,), greedy, prefix + ids))
            self.counters.count_forward(len(rows), 1)
        rollout = self.rollout(prefix) if request.rollout_tokens else ()
        return Expansion(proposals, rollout)

    def sample(
        self,
        prefix: tuple[int, ...],
        attempt: int,
        request: ExpandRequest,
        generator: torch.Generator,
    ) -> tuple[int, ...]:
        """One sampled set: words other than the favourite, drawn from ``generator``."""
        picks = torch.randint(1, len(RANKING), (request.length,), generator=generator)
        return tuple(RANKING[int(i)] for i in picks)

    def rollout(self, prefix: tuple[int, ...]) -> tuple[int, ...]:
        return (GOOD,)


class WordEmbedder:
    """Bag of words: texts with the same words are identical."""

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(WORDS))
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, WORDS.index(word)] += 1
        return torch.nn.functional.normalize(out + 1e-6, dim=-1)


def penalise_bad(text: str) -> float:
    return -1.0 if "bad" in text.split() else 1.0


def run(config: RainConfig, evaluator=penalise_bad, backend=None, on_step=None):
    backend = backend or FakeBackend()
    search = TreeSearch(backend, FunctionEvaluator(evaluator), WordEmbedder(), config, "prompt")
    for step in steps_alone(search, [3, 3, 3]):
        if on_step is not None:
            on_step(step)
    return search, search.result


def test_never_commits_penalised_branch() -> None:
    # The fake's priors favour "bad" (a few seeds in 30 still commit it first): seed 0 does not.
    config = RainConfig(max_new_tokens=30, seed=0)
    _, result = run(config)
    assert BAD not in result.token_ids
    assert "bad" not in result.text
    assert result.completion_tokens == 30
    assert result.finish_reason == "length"
    # The token-set schedule: 1, 2, 4, then 10s, cut to the budget.
    assert [len(step.token_ids) for step in result.steps] == [1, 2, 4, 10, 10, 3]


def test_same_seed_same_output_and_different_seed_differs() -> None:
    config = RainConfig(max_new_tokens=17, seed=5)
    first = run(config)[1]
    again = run(config)[1]
    other = run(config.merged(seed=6))[1]
    assert first.token_ids == again.token_ids
    assert first.stats["forward_calls"] == again.stats["forward_calls"]
    assert first.token_ids != other.token_ids


def test_budget_counts_inherited_visits() -> None:
    # Value 0 never passes V=0.8, so no early stop: each step runs max(15, 50 - inherited).
    config = RainConfig(max_new_tokens=17, similarity_weight=0.0)
    _, result = run(config, evaluator=lambda text: 0.0)
    assert result.steps[0].inherited_visits == 0
    assert result.steps[0].iterations == 50
    for before, after in zip(result.steps, result.steps[1:], strict=False):
        assert after.inherited_visits == before.visits  # the committed child's subtree is kept
        assert after.iterations == max(15, 50 - after.inherited_visits)


def test_early_stop_is_checked_after_every_iteration() -> None:
    # Every text scores 1: the first step stops as soon as its best child has 7 real
    # visits, well before the 15 fresh iterations the budget would otherwise ask for.
    _, result = run(RainConfig(max_new_tokens=3), evaluator=lambda text: 1.0)
    first = result.steps[0]
    assert first.early_stopped
    assert first.iterations < 15
    best = next(c for c in first.candidates if c.chosen)
    assert best.real_visits == 7 and best.value == pytest.approx(1.0)


def good_child_root(backend: FakeBackend, visits: int, value: float) -> Node:
    """A root whose only child already has ``visits`` real visits worth ``value``."""
    root = Node((), state=backend.start([3]), n=visits, fn=visits, q=value)
    child = Node((GOOD,), root, 1, n=visits, fn=visits, q=value, state=(GOOD,))
    root.children = [child]
    return root


def test_an_inherited_good_child_stops_after_one_fresh_iteration() -> None:
    backend = FakeBackend()
    config = RainConfig(max_new_tokens=20)
    search = TreeSearch(backend, FunctionEvaluator(lambda t: 1.0), WordEmbedder(), config, "p")
    assert search_once(search, good_child_root(backend, visits=7, value=0.9)) == (1, True)


def test_early_stop_flag_survives_a_loop_ending_at_the_budget() -> None:
    # The last iteration both meets the budget (T=8 visits) and makes the child good
    # enough (7 > T_m=6 real visits, q > 0.8): the step reports the early stop.
    backend = FakeBackend()
    config = RainConfig(max_new_tokens=20, max_iterations=7, min_fresh_iterations=1)
    search = TreeSearch(backend, FunctionEvaluator(lambda t: 1.0), WordEmbedder(), config, "p")
    assert search_once(search, good_child_root(backend, visits=6, value=0.9)) == (1, True)


def test_dynamic_addition_widens_a_hopeless_node() -> None:
    # Every child scores -1 and the 1-token children only differ by one word, so the
    # root must gain candidates, one top token at a time, up to max_children.
    config = RainConfig(max_new_tokens=1, num_children=3, max_children=5)
    backend = FakeBackend()
    search = TreeSearch(
        backend, FunctionEvaluator(lambda t: -1.0), ConstantEmbedder(), config, "prompt"
    )
    root = Node((), state=backend.start([1]))
    search_once(search, root)
    additions = [r for r in backend.requests if r.exclude]
    assert [len(r.exclude) for r in additions] == [3, 4]
    assert [c.token_ids for c in root.children] == [(BAD,), (GOOD,), (3,), (4,), (5,)]


class ConstantEmbedder:
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.ones(len(texts), 2) / 2**0.5


def test_eos_finishes_and_stop_sequences_cut() -> None:
    config = RainConfig(max_new_tokens=50)
    _, result = run(config, backend=FakeBackend(eos_after=3))
    assert result.finish_reason == "eos"
    assert result.token_ids[-1] == EOS
    # With "bad" penalised the search commits sampled sets of other words, which
    # contain "nice" sooner or later: the answer ends there, cut before it.
    _, stopped = run(RainConfig(max_new_tokens=50, stop_sequences=("nice",)))
    assert stopped.finish_reason == "stop"
    assert 4 in stopped.token_ids
    assert "nice" not in stopped.text


def test_a_budget_spent_on_the_step_that_ends_the_answer_is_no_truncation() -> None:
    # The budget ran out during the last step, but the child committed ends with EOS:
    # the answer is whole, so it is neither "budget" nor carries the budget's warning.
    backend = FakeBackend()
    search = TreeSearch(backend, FunctionEvaluator(penalise_bad), WordEmbedder(), RainConfig(), "p")
    search.begin(backend.start([3]), [3])
    assert search.root is not None
    search.root.children = [Node((EOS,), search.root, 1, n=2, fn=2, q=0.5, finish="eos")]
    search.out_of_budget = "the budget of 9 forward calls was spent; the answer is truncated"
    search.finish_step()
    assert search.result is not None
    assert search.result.finish_reason == "eos" and not search.result.truncated
    assert search.result.warnings == []


def test_stream_callback_reassembles_text() -> None:
    pieces: list[str] = []
    _, result = run(RainConfig(max_new_tokens=12), on_step=lambda s: pieces.append(s.text))
    assert "".join(pieces) == result.text
    assert len(pieces) == len(result.steps)


def test_first_expansion_is_top_tokens_then_sampled_sets() -> None:
    backend = FakeBackend()
    run(RainConfig(max_new_tokens=3), backend=backend)
    first = backend.requests[0]
    assert (first.mode, first.length, first.count, first.greedy) == ("top", 1, 10, False)
    second = next(r for r in backend.requests if r.length == 2)
    assert (second.mode, second.count, second.greedy, second.top_k) == ("sample", 9, True, 15)


def test_commit_keeps_the_chosen_subtree_and_drops_siblings() -> None:
    backend = FakeBackend()
    search = TreeSearch(
        backend, FunctionEvaluator(penalise_bad), WordEmbedder(), RainConfig(seed=2), "prompt"
    )
    root = Node((), state=backend.start([1]))
    search_once(search, root)
    chosen = best_child(root)
    kept = {id(node): (node.n, node.q) for node in chosen.walk()}
    grandchildren = list(chosen.children)
    new_root = search.commit(root, chosen)
    assert new_root is chosen and new_root.parent is None
    assert root.children == []  # the siblings' subtrees are released
    assert {id(node): (node.n, node.q) for node in new_root.walk()} == kept
    assert new_root.children == grandchildren and len(grandchildren) > 0
    assert new_root.state == chosen.token_ids  # the fake backend's state: the committed tokens
    # Root noise is re-mixed at the new root: p = 0.75 prior + 0.25 noise, noise summing to 1.
    assert sum(child.p for child in new_root.children) == pytest.approx(1.0)
    for child in new_root.children:
        assert 0.75 * child.prior <= child.p <= 0.75 * child.prior + 0.25
    assert any(child.p != pytest.approx(child.prior) for child in new_root.children)


def test_cancelled_search_raises_between_iterations() -> None:
    backend = FakeBackend()
    search = TreeSearch(backend, FunctionEvaluator(penalise_bad), WordEmbedder(), RainConfig(), "p")
    search.cancelled = lambda: len(backend.requests) >= 3  # cancelled during the third
    with pytest.raises(Cancelled, match="cancelled"):
        run_alone(search, [1])
    assert len(backend.requests) == 3  # the fourth iteration never started
    assert search.root is not None and search.root.fn == 2  # the third was dropped unfinished


def test_forward_call_budget_returns_the_answer_so_far_flagged() -> None:
    _, full = run(RainConfig(max_new_tokens=50))
    _, cut = run(RainConfig(max_new_tokens=50, max_forward_calls=40))
    assert full.finish_reason == "length" and not full.truncated
    assert cut.finish_reason == "budget" and cut.truncated and cut.stats["truncated"]
    assert 0 < cut.completion_tokens < 50
    assert cut.token_ids == full.token_ids[: cut.completion_tokens]  # same search, stopped early
    assert "40 forward calls" in cut.warnings[0]


def test_timeout_still_commits_one_searched_step() -> None:
    _, result = run(RainConfig(max_new_tokens=50, timeout=1e-9))
    assert result.finish_reason == "budget"
    assert len(result.steps) == 1 and result.steps[0].iterations == 1
    assert "timeout" in result.warnings[0]


def test_explain_says_why_each_candidate_was_left_and_nothing_was_rewound(tmp_path) -> None:
    _, result = run(RainConfig(max_new_tokens=7, seed=1))
    text = result.explain()
    assert text.splitlines()[0] == "RAIN search: 3 steps, finish=length"
    assert text.count("✓ kept: most visits") == 3  # one kept candidate per step
    first = result.steps[0]
    assert [c.chosen for c in first.candidates].count(True) == 1
    bad = next(c for c in first.candidates if c.text == "bad")
    assert bad.value < 0 and not bad.chosen  # the greedy favourite was judged bad and dropped
    line = next(line for line in text.splitlines() if "'bad' " in line)
    assert line.endswith("✗ fewer visits than the kept one")
    assert "rewound" not in text  # no step was taken back (max_rewinds=0)
    assert "· never visited" in text
    result.plot_tree(str(tmp_path / "tree.png"))
    assert (tmp_path / "tree.png").read_bytes()[:4] == b"\x89PNG"


def test_an_early_stop_undone_by_a_leaf_answered_beside_it_reopens_the_step() -> None:
    # Two parallel leaves answered in one batch: the first makes the best child good
    # enough to stop, the second (backed up right after) brings it below V. The step
    # must judge the state that holds once both are in, not the first leaf's.
    backend = FakeBackend()
    config = RainConfig(max_new_tokens=20, parallel_leaves=2, min_fresh_iterations=4)
    search = TreeSearch(backend, FunctionEvaluator(lambda t: 1.0), WordEmbedder(), config, "p")
    root = good_child_root(backend, visits=7, value=0.9)
    search.root, search.step = root, StepProgress(inherited=7)
    search.running = 2
    search.iteration_done(True)
    assert search.closing and search.step.stopped_early
    child = root.children[0]
    child.add_value(-1.0)  # the second leaf's backup: q 0.9 -> 0.66, below V = 0.8
    child.fn += 1
    search.iteration_done(True)
    assert not search.closing and not search.step.stopped_early


def test_rounds_are_no_larger_than_the_visits_the_step_still_needs() -> None:
    backend = FakeBackend()
    config = RainConfig(
        max_new_tokens=20, parallel_leaves=8, max_iterations=10, min_fresh_iterations=2
    )
    search = TreeSearch(backend, FunctionEvaluator(lambda t: 1.0), WordEmbedder(), config, "p")
    search.root = good_child_root(backend, visits=7, value=0.5)
    search.step = StepProgress(inherited=7)
    assert search.round_size() == 3  # T = 10 visits, 7 inherited
    search.root = good_child_root(backend, visits=12, value=0.5)
    assert search.round_size() == 2  # T met by inherited visits: the 2 fresh ones still run
    search.root = Node((), n=0, fn=0)
    assert search.round_size() == 8


def dead_end_after_good(text: str) -> float:
    """Bad: "bad" anywhere, or more than three words after a first "good" (a dead end
    a step of short rollouts cannot see)."""
    words = text.split()
    if "bad" in words:
        return -1.0
    return -1.0 if words[:1] == ["good"] and len(words) > 3 else 1.0


def rewind_config(max_rewinds: int) -> RainConfig:
    return RainConfig(
        max_new_tokens=7,
        num_children=3,
        max_iterations=5,
        min_fresh_iterations=5,
        max_rewinds=max_rewinds,
        seed=0,
    )


def test_without_rewinds_a_committed_dead_end_is_kept() -> None:
    _, result = run(rewind_config(0), evaluator=dead_end_after_good)
    assert result.text.startswith("good")
    assert result.steps[1].value < 0  # every continuation of "good" is bad
    assert result.stats["rewinds"] == 0


def test_a_dead_end_rewinds_into_the_previous_step_and_takes_another_child() -> None:
    shown: list[StepStats] = []
    _, result = run(rewind_config(1), evaluator=dead_end_after_good, on_step=shown.append)
    assert result.text.split()[0] == "fine"  # "good" was committed, then taken back
    assert result.stats["rewinds"] == 1 and result.steps[0].rewinds == 1
    # the reader never saw the step that was taken back, and the steps add up to the text
    assert [step.text for step in shown] == result.token_sets
    assert "".join(s.text for s in shown) == result.text
    text = result.explain()
    assert "decided again after 1 dead end below it" in text
    rewound = [line for line in text.splitlines() if "rewound" in line]
    assert len(rewound) == 1 and rewound[0].split()[1] == "'good'"
    assert rewound[0].endswith("↶ rewound: committed, then every continuation judged bad")
    assert [c.text for c in result.steps[0].rewound] == ["good"]


def test_all_judged_bad_needs_a_visited_child_and_every_visited_one_below_zero() -> None:
    root = Node(())
    first, second = Node((1,), root, 1), Node((2,), root, 1)
    root.children = [first, second]
    assert not all_judged_bad(root)  # nothing visited: nothing known
    first.add_value(-1.0)
    first.fn = 1
    assert all_judged_bad(root)  # the unvisited one does not count
    second.add_value(0.5)
    second.fn = 1
    assert not all_judged_bad(root)


class CollapsingBackend(FakeBackend):
    """Every sample is the favourite "bad" (the samples collapse to the greedy set);
    a ``top`` set of several tokens repeats its first token, which no sample would pick."""

    def sample(self, prefix, attempt, request, generator) -> tuple[int, ...]:
        return (BAD,) * request.length

    def expand(self, path, request, generator) -> Expansion:
        expansion = super().expand(path, request, generator)
        if request.mode == "top" and request.length > 1:
            for proposal in expansion.proposals:
                proposal.token_ids = proposal.token_ids * request.length
        return expansion


def test_a_node_whose_samples_collapse_gets_a_sibling_for_its_bad_only_child() -> None:
    # Step 2's sets are 2 tokens: the greedy set and every sample are "bad bad", one child
    # judged -1. Dynamic addition must still widen it, with the most likely first token no
    # child starts with (sampling again would repeat "bad bad"), and the step keeps that.
    backend = CollapsingBackend()
    config = RainConfig(max_new_tokens=3, num_children=3, seed=0)
    _, result = run(config, backend=backend)
    added = [r for r in backend.requests if r.exclude]
    assert added and (added[0].mode, added[0].length, added[0].count) == ("top", 2, 1)
    assert list(added[0].exclude) == [(BAD, BAD)]
    second = result.steps[1]
    assert [c.token_ids for c in second.candidates][:2] == [(BAD, BAD), (GOOD, GOOD)]
    assert second.token_ids == (GOOD, GOOD) and "bad" not in result.text
    assert next(c for c in second.candidates if c.token_ids == (BAD, BAD)).verdict != "rewound"


def test_a_child_judged_good_keeps_its_sampled_siblings_alone() -> None:
    backend = CollapsingBackend()
    run(RainConfig(max_new_tokens=3, num_children=3, seed=0), lambda t: 1.0, backend)
    assert not [r for r in backend.requests if r.exclude]  # no addition below a +1 child


def margin_config(margin: float | None) -> RainConfig:
    """One leaf, 4 visits a step, two children: too few visits for +1 to overtake -1."""
    return RainConfig(
        max_new_tokens=1,
        num_children=2,
        max_iterations=4,
        min_fresh_iterations=4,
        commit_margin=margin,
        similarity_weight=0.0,
    )


def test_at_one_leaf_a_margin_commits_the_child_the_judge_liked_over_the_most_visited() -> None:
    # The prior favours "bad": it gets 2 visits at -1 before "good" gets 1 at +1.
    _, paper = run(margin_config(None))
    kept = next(c for c in paper.steps[0].candidates if c.chosen)
    assert (kept.text, kept.real_visits, kept.value, kept.verdict) == (
        "bad",
        2,
        -1.0,
        "most_visits",
    )
    _, margin = run(margin_config(1.0))
    assert margin.text == "good"
    assert [(c.text, c.verdict) for c in margin.steps[0].candidates] == [
        ("bad", "clearly_worse"),
        ("good", "overruled"),
    ]
    assert "✓ kept: the rule's first pick was judged clearly worse" in margin.explain()
