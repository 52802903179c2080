"""explain() labels: each is the commit's own verdict, drawn from the decision record."""

from __future__ import annotations

import pytest

from rain_search.explain import LABELS, explain_text
from rain_search.result import RainResult
from rain_search.stats import Counters
from rain_search.step_record import StepProgress
from rain_search.steps import KEPT, Verdict
from rain_search.tree import Node, decide


def family(*stats: tuple[float, float]) -> Node:
    """A root whose children ``c0``, ``c1``... have the given (real visits, value)."""
    root = Node(())
    for i, (n, q) in enumerate(stats):
        root.children.append(Node((i,), root, 1, prior=0.2, p=0.2, n=n, fn=int(n), q=q))
    return root


def one_step(root: Node, rule: str = "visits", margin: float | None = None) -> RainResult:
    """A result of one step committed from ``root``; candidate texts ``c0``, ``c1``..."""
    decision = decide(root, rule, margin)  # type: ignore[arg-type]
    stats = StepProgress().stats(
        index=0,
        root=root,
        decision=decision,
        text="x",
        token_ids=decision.chosen.token_ids,
        cost=Counters(),
        decode=lambda ids: f"c{ids[0]}",
    )
    return RainResult(
        text="x",
        token_ids=list(decision.chosen.token_ids),
        prompt_tokens=1,
        finish_reason="length",
        mode="rain",
        totals=Counters(),
        wall_time=0.0,
        seed=0,
        steps=[stats],
    )


def explained(root: Node, rule: str, margin: float | None) -> dict[str, str]:
    """Each candidate's text -> the label its line ends with."""
    lines = explain_text(one_step(root, rule, margin)).splitlines()[2:]
    return {line.split("'")[1]: line.split("  ")[-1] for line in lines}


# (children as (visits, value), rule, margin, the candidate, its verdict)
CASES: list[tuple[list[tuple[float, float]], str, float | None, str, Verdict]] = [
    ([(5, -0.2), (3, 0.9)], "visits", None, "c0", "most_visits"),
    ([(4, 0.0), (3, 1.0)], "value", None, "c1", "best_value"),
    ([(6, -1.0), (5, 1.0)], "visits", 1.0, "c1", "overruled"),
    ([(5, -0.2), (3, 0.9)], "visits", None, "c1", "fewer_visits"),
    ([(4, 0.0), (3, 1.0)], "value", None, "c0", "worse"),
    ([(5, 0.6), (5, 0.2)], "visits", None, "c1", "worse"),
    ([(2, 0.5), (2, 0.5)], "visits", None, "c1", "tied"),
    ([(6, 0.0), (2, 1.0)], "value", None, "c1", "few_visits"),
    ([(6, -1.0), (5, 1.0)], "visits", 1.0, "c0", "clearly_worse"),
    ([(3, 0.5), (0, 0.0)], "visits", None, "c1", "unvisited"),
]


@pytest.mark.parametrize(("children", "rule", "margin", "name", "verdict"), CASES)
def test_each_label_is_the_commits_verdict(
    children: list[tuple[float, float]],
    rule: str,
    margin: float | None,
    name: str,
    verdict: Verdict,
) -> None:
    labels = explained(family(*children), rule, margin)
    assert labels[name] == LABELS[verdict]
    assert sum(label.startswith("✓") for label in labels.values()) == 1


def test_every_verdict_has_a_case_and_only_kept_ones_say_kept() -> None:
    assert {case[-1] for case in CASES} | {"rewound"} == set(LABELS)
    assert {verdict for verdict, label in LABELS.items() if label.startswith("✓")} == KEPT


def test_the_issues_step_no_longer_calls_a_better_sibling_rewound() -> None:
    # explain() once said "✗ rewound: judged bad" of a -0.60 sibling beside a kept -1.00
    # child (nothing was rewound) and only "not kept" of a +1.00 one.
    labels = explained(family((6, -1.0), (3, -0.6), (2, 1.0)), "visits", None)
    assert labels == {
        "c0": LABELS["most_visits"],
        "c1": LABELS["fewer_visits"],
        "c2": LABELS["fewer_visits"],
    }
    assert not any("rewound" in label for label in labels.values())


def test_the_efficacy_benchmark_counts_a_clear_miss_only_beside_a_liked_visited_sibling() -> None:
    from benchmarks.efficacy import clear_misses

    assert clear_misses(one_step(family((6, -1.0), (5, 1.0), (0, 0.0)))) == [False]
    assert clear_misses(one_step(family((6, -1.0), (5, 1.0)))) == [True]  # every child tried
    assert clear_misses(one_step(family((6, -1.0), (5, 1.0)), margin=1.0)) == []
    assert clear_misses(one_step(family((6, -1.0), (5, 0.4)))) == []
