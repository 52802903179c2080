"""Tree arithmetic with exact numbers: no model involved."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rain_search.steps import KEPT
from rain_search.tree import (
    Node,
    ValueRange,
    Visits,
    add_pending,
    add_prior,
    assign_priors,
    backup,
    best_child,
    children_alike,
    clip_greedy,
    decide,
    drop_child_visits,
    early_stop,
    fold_embeddings,
    mix_root_noise,
    needs_more_children,
    normalise,
    puct_score,
    select_child,
    select_leaf,
    similarity_update,
)


def family(*stats: tuple[float, float, float]) -> Node:
    """A root whose children have the given (n, q, p)."""
    root = Node(())
    for i, (n, q, p) in enumerate(stats):
        child = Node((i,), root, 1, prior=p, p=p, n=n, fn=int(n), q=q)
        root.children.append(child)
    root.n = sum(child.n for child in root.children)
    return root


def test_puct_score_formula() -> None:
    root = family((3, 0.5, 0.2))
    child = root.children[0]
    # Q̂ = (0.5 + 1) / 2 = 0.75; U = 2 * 0.2 * sqrt(3) / (1 + 3)
    assert puct_score(child, 3, 2.0, ValueRange()) == pytest.approx(0.75 + 0.4 * math.sqrt(3) / 4)


def test_unvisited_child_has_zero_exploitation() -> None:
    root = family((0, 0.9, 0.5))
    assert puct_score(root.children[0], 4, 2.0, ValueRange()) == pytest.approx(2 * 0.5 * 2 / 1)


def test_puct_order() -> None:
    # n(parent)=4. Child 0: 0.5 + 2*.1*2/4 = 0.6; child 1: 0.25 + 2*.6*2/2 = 1.45;
    # child 2 (unvisited): 0 + 2*.3*2/1 = 1.2.
    root = family((3, 0.0, 0.1), (1, -0.5, 0.6), (0, 0.0, 0.3))
    scores = [puct_score(c, root.n, 2.0, ValueRange()) for c in root.children]
    assert scores == pytest.approx([0.6, 1.45, 1.2])
    assert select_child(root, 2.0, ValueRange()) is root.children[1]
    # With c = 0 pure exploitation wins.
    assert select_child(root, 0.0, ValueRange()) is root.children[0]


def test_value_range_widens_only() -> None:
    bounds = ValueRange()
    bounds.update(0.3)
    assert (bounds.low, bounds.high) == (-1.0, 1.0)
    bounds.update(-3.0)
    assert bounds.normalise(1.0) == pytest.approx(1.0)
    assert bounds.normalise(-1.0) == pytest.approx(0.5)


def test_backup_running_mean_without_discount() -> None:
    root = Node(())
    child = Node((1,), root)
    leaf = Node((2,), child)
    path = [root, child, leaf]
    bounds = ValueRange()
    backup(path, 1.0, bounds)
    backup(path[:2], -0.5, bounds)
    backup(path, 0.25, bounds)
    assert (root.n, root.fn, root.q) == (3, 3, pytest.approx((1.0 - 0.5 + 0.25) / 3))
    assert (child.n, child.q) == (3, pytest.approx(0.75 / 3))
    assert (leaf.n, leaf.fn, leaf.q) == (2, 2, pytest.approx(1.25 / 2))


def test_similarity_update_fractional_visits() -> None:
    root = Node(())
    x = Node((1,), root, n=1, fn=1, q=1.0)
    close = Node((2,), root, n=2, fn=2, q=-1.0, embedding=torch.tensor([0.96, 0.28]))
    far = Node((3,), root, n=1, fn=1, q=0.0, embedding=torch.tensor([0.0, 1.0]))
    root.children = [x, close, far]
    (fold,) = fold_embeddings([([x], [torch.tensor([1.0, 0.0])])])
    fold.apply()
    updated = similarity_update(fold, 1.0, threshold=0.95, weight=0.2)
    sim = 0.96 / math.hypot(0.96, 0.28)  # = 0.96
    assert updated == 1
    assert close.n == pytest.approx(2 + 0.2 * sim)
    assert close.fn == 2  # real visits untouched
    assert close.q == pytest.approx((-2 + 0.2 * sim) / (2 + 0.2 * sim))
    assert (far.n, far.q) == (1, 0.0)
    assert (x.n, x.q) == (1, 1.0)


def test_embedding_running_mean() -> None:
    node = Node((1,), Node(()))
    for vector in ([1.0, 0.0], [0.0, 1.0], [0.0, 1.0]):
        (fold,) = fold_embeddings([([node], [torch.tensor(vector)])])
        fold.apply()
    assert node.embedding is not None
    assert node.embedding.tolist() == pytest.approx([1 / 3, 2 / 3])
    assert node.embedding_visits == 3


def small_tree(seed: int, dim: int) -> list[Node]:
    """A root with three embedded children, the first with an embedded child: a path of two."""
    generator = torch.Generator().manual_seed(seed)
    root = Node(())
    children = [Node((i,), root, depth=1) for i in range(3)]
    root.children = children
    grandchild = Node((9,), children[0], depth=2)
    children[0].children = [grandchild, Node((8,), children[0], depth=2)]
    for node in [*children, *children[0].children]:
        node.embedding = torch.randn(dim, generator=generator)
        node.embedding_visits = 2
    return [children[0], grandchild]


def test_folding_many_visits_at_once_gives_each_its_own_numbers() -> None:
    # one leaf per tree, trees with embedders of two sizes: one pass must give every
    # fold bit for bit what folding it alone gives (the engine folds many searches at once)
    paths = [small_tree(seed, dim) for seed, dim in [(0, 8), (1, 8), (2, 5), (3, 8)]]
    vectors = [
        list(
            torch.randn(
                len(path), len(path[0].embedding), generator=torch.Generator().manual_seed(i)
            )
        )
        for i, path in enumerate(paths)
    ]
    together = fold_embeddings(list(zip(paths, vectors, strict=True)))
    alone = [fold_embeddings([(p, v)])[0] for p, v in zip(paths, vectors, strict=True)]
    for a, b in zip(together, alone, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.means, b.means, strict=True))
        assert [(id(node), sim) for node, sim in a.similar] == [
            (id(node), sim) for node, sim in b.similar
        ]
        assert len(a.similar) == 3  # two siblings at depth 1, one at depth 2


def test_fold_refuses_a_vector_count_that_does_not_match_the_nodes() -> None:
    path = small_tree(0, 4)
    with pytest.raises(ValueError, match="one vector per text"):
        fold_embeddings([(path, [torch.zeros(4)])])


def test_priors_greedy_clipped_into_sampled_range() -> None:
    # Sampled raw probabilities 0.1, 0.2, 0.3: greedy must lie in [0.3+0.1, 0.6].
    weights = [0.9, 0.1, 0.2, 0.3]
    assert normalise(clip_greedy(weights, 0)) == pytest.approx([0.5, 0.1 / 1.2, 0.2 / 1.2, 0.25])
    assert clip_greedy([0.01, 0.1, 0.2, 0.3], 0)[0] == pytest.approx(0.4)
    # No greedy child (1-token sets): weights as they are.
    assert clip_greedy(weights, None) == weights


def test_greedy_clip_with_one_sampled_sibling_follows_the_reference() -> None:
    # The reference caps at the sum first, then raises to max + min: with one sampled
    # sibling of weight s the greedy set always weighs 2s (min(g, s) then max(., 2s)).
    for greedy in (0.001, 0.05, 0.9):
        assert clip_greedy([greedy, 0.05], 0) == pytest.approx([0.1, 0.05])


def test_assign_priors_and_fixed_root_mix() -> None:
    root = Node(())
    root.children = [Node((i,), root, log_prob=math.log(p)) for i, p in enumerate((0.2, 0.6))]
    assign_priors(root.children, single_token=True, root_noise=0.25)
    assert [c.prior for c in root.children] == pytest.approx([0.25, 0.75])
    # The root's children: 0.75 p + 0.25 / K, the same on every call (no random draw).
    assert [c.p for c in root.children] == pytest.approx([0.75 * 0.25 + 0.125, 0.75 * 0.75 + 0.125])
    mix_root_noise(root.children, 0.25)
    assert [c.p for c in root.children] == pytest.approx([0.3125, 0.6875])
    # Below the root no mix is applied.
    child = root.children[0]
    child.children = [Node((i,), child, log_prob=math.log(p)) for i, p in enumerate((0.5, 0.5))]
    assign_priors(child.children, single_token=True, root_noise=0.25)
    assert [c.p for c in child.children] == pytest.approx([0.5, 0.5])


def test_added_child_prior_leaves_the_siblings_alone() -> None:
    root = Node(())
    root.children = [Node((i,), root, log_prob=math.log(p)) for i, p in enumerate((0.3, 0.5))]
    assign_priors(root.children, single_token=True, root_noise=0.25)
    before = [(c.prior, c.p) for c in root.children]
    new = Node((2,), root, log_prob=math.log(0.2))
    root.children.append(new)
    add_prior(root, new, root_noise=0.25)
    assert [(c.prior, c.p) for c in root.children[:2]] == before
    assert new.prior == pytest.approx(0.2 / 1.0)
    assert new.p == pytest.approx(0.75 * 0.2 + 0.25 / 3)


def test_dynamic_addition_triggers() -> None:
    root = family((1, -0.5, 0.5), (1, -0.2, 0.5))
    for child in root.children:
        child.embedding = torch.tensor([1.0, 0.0])
    assert children_alike(root, 2, 0.03)
    assert needs_more_children(root, 2, 0.03, max_children=20)
    # Not when the children are at the cap...
    assert not needs_more_children(root, 2, 0.03, max_children=2)
    # ...or when one is positive...
    root.children[1].q = 0.1
    assert not needs_more_children(root, 2, 0.03, max_children=20)
    root.children[1].q = -0.1
    # ...or unvisited...
    root.children[1].fn = 0
    assert not needs_more_children(root, 2, 0.03, max_children=20)
    root.children[1].fn = 1
    # ...or diverse: the sample variance (torch.var, as the reference) of [1,0] and [0,1]
    # is 0.5 per dim, norm 0.7071 >= 0.03 * 20 (the population variance, 0.3536, is not).
    root.children[1].embedding = torch.tensor([0.0, 1.0])
    assert not needs_more_children(root, 20, 0.03, max_children=20)
    # A long enough set makes the same spread count as alike: 0.7071 < 0.03 * 24.
    assert needs_more_children(root, 24, 0.03, max_children=20)


def test_a_single_child_judged_bad_asks_for_siblings() -> None:
    # Its variance is undefined (NaN in the reference), so it is never "alike"; but one
    # child is the extreme of too alike to choose between: the node must widen when
    # that child is judged bad, or a node whose samples collapse keeps it whatever it scored.
    root = family((2, -0.5, 1.0))
    root.children[0].embedding = torch.tensor([1.0, 0.0])
    assert not children_alike(root, 10, 0.03)
    assert needs_more_children(root, 10, 0.03, max_children=20)
    assert not needs_more_children(root, 10, 0.03, max_children=1)  # bounded as the paper's
    root.children[0].q = 0.2
    assert not needs_more_children(root, 10, 0.03, max_children=20)  # judged good: keep it
    root.children[0].q, root.children[0].fn = -0.5, 0
    assert not needs_more_children(root, 10, 0.03, max_children=20)  # not judged yet


def test_best_child_by_visits_then_value() -> None:
    root = family((3, 0.1, 0.3), (5, -0.2, 0.3), (5, 0.4, 0.4))
    assert best_child(root) is root.children[2]


def test_early_stop() -> None:
    root = family((7, 0.85, 0.5), (2, 0.9, 0.5))
    assert early_stop(root, visits=6, value=0.8)
    assert not early_stop(root, visits=7, value=0.8)  # needs more than T_m visits
    assert not early_stop(root, visits=6, value=0.85)  # needs q above V
    assert not early_stop(Node(()), 6, 0.8)


def test_path_from() -> None:
    root = Node(())
    a = Node((1,), root)
    b = Node((2,), a)
    assert b.path_from(root) == [a, b]
    with pytest.raises(ValueError):
        root.path_from(b)


def two_children_one_liked() -> tuple[Node, Node, Node]:
    """A root whose first child scored +1 and has children; the second scored -1."""
    root = Node((), n=2, fn=2)
    liked = Node((1,), root, 1, p=0.5, n=1, fn=1, q=1.0)
    disliked = Node((2,), root, 1, p=0.5, n=1, fn=1, q=-1.0)
    liked.children = [Node((3,), liked, 2, p=0.5), Node((4,), liked, 2, p=0.5)]
    root.children = [liked, disliked]
    return root, liked, disliked


def test_a_virtual_visit_keeps_leaves_where_the_judge_liked_and_a_virtual_loss_spreads_them() -> (
    None
):
    root, liked, disliked = two_children_one_liked()
    add_pending([root, liked], 2)  # two leaves already in flight below the liked child
    # mean: liked 1 + 2·0.5·sqrt(4)/4 = 1.5 against disliked 0 + 2·0.5·2/2 = 1.0
    assert puct_score(liked, 4, 2.0, ValueRange(), "mean") == pytest.approx(1.5)
    # loss: liked's two pending visits count as -1: Q̂ = ((1 - 2) / 3 + 1) / 2 = 1/3
    assert puct_score(liked, 4, 2.0, ValueRange(), "loss") == pytest.approx(1 / 3 + 0.5)
    # liked's own children are free leaves: where does the third leaf go?
    assert select_leaf(root, 2.0, ValueRange(), "mean")[1] is liked
    assert select_leaf(root, 2.0, ValueRange(), "loss")[1] is disliked


def test_with_nothing_in_flight_both_pending_rules_are_plain_puct() -> None:
    root, liked, disliked = two_children_one_liked()
    for child in (liked, disliked):
        assert puct_score(child, 2, 2.0, ValueRange(), "mean") == puct_score(
            child, 2, 2.0, ValueRange(), "loss"
        )


def test_dropping_a_child_takes_its_visits_and_values_out_of_the_parent() -> None:
    parent = Node((), n=4, fn=4, q=0.0)  # one visit at +1 and three at -1/3 overall
    child = Node((1,), parent, 1, n=3, fn=3, q=-1 / 3)
    drop_child_visits(parent, Visits.of(child))
    assert (parent.n, parent.fn) == (1, 1)
    assert parent.q == pytest.approx(1.0)


def test_the_value_rule_commits_the_best_valued_of_the_well_visited_children() -> None:
    # The step in the issue: a round gave 'When' four visits before their values came
    # back (0.00 on average); 'Selecting' has three visits, all +1.
    root = family(*[(4, 0.0, 0.22), (3, 1.0, 0.11), (3, 1 / 3, 0.49), (1, -1.0, 0.18)])
    assert best_child(root, "visits") is root.children[0]
    assert best_child(root, "value") is root.children[1]
    # a child with fewer than half the most real visits is no contender, however good
    root = family(*[(6, 0.0, 0.5), (2, 1.0, 0.5)])
    assert best_child(root, "value") is root.children[0]
    assert early_stop(family(*[(4, 0.0, 0.5), (4, 0.9, 0.5)]), 3, 0.8, "value")
    assert not early_stop(family(*[(5, 0.0, 0.5), (4, 0.9, 0.5)]), 3, 0.8, "visits")


def test_auto_commits_by_visits_one_leaf_at_a_time_and_by_value_in_parallel() -> None:
    from rain_search.config import RainConfig

    assert RainConfig().commit_by == "visits"
    assert RainConfig(parallel_leaves=8).commit_by == "value"
    assert RainConfig(parallel_leaves=8, commit_rule="visits").commit_by == "visits"


def verdicts(root: Node, rule: str = "visits", margin: float | None = None) -> list[str]:
    decision = decide(root, rule, margin)  # type: ignore[arg-type]
    assert decision.verdict(decision.chosen) in KEPT
    return list(decision.verdicts)


def test_visits_rule_verdicts_say_why_each_child_was_left() -> None:
    root = family((3, 0.9, 0.2), (5, -0.2, 0.3), (5, -0.6, 0.2), (0, 0.0, 0.3))
    assert verdicts(root) == ["fewer_visits", "most_visits", "worse", "unvisited"]
    tied = family((2, 0.5, 0.5), (2, 0.5, 0.5))
    assert verdicts(tied) == ["most_visits", "tied"]


def test_value_rule_verdicts_say_why_each_child_was_left() -> None:
    root = family((4, 0.0, 0.2), (3, 1.0, 0.1), (3, 1.0, 0.1), (1, 1.0, 0.1), (2, -0.5, 0.5))
    # 'best' 3 visits at +1; its twin ties; 1 visit is under half of 4; -0.5 is worse
    assert verdicts(root, "value") == ["worse", "best_value", "tied", "few_visits", "worse"]
    fewer = family((4, 1.0, 0.5), (2, 1.0, 0.5))
    assert verdicts(fewer, "value") == ["best_value", "fewer_visits"]


def test_a_margin_never_commits_a_child_judged_clearly_worse_than_a_visited_sibling() -> None:
    # The step at one leaf: 6 visits at -1.00 over 5 at +1.00.
    root = family((6, -1.0, 0.6), (5, 1.0, 0.3), (1, 0.2, 0.1))
    assert best_child(root) is root.children[0]  # the paper's rule alone
    assert verdicts(root, "visits", 1.0) == ["clearly_worse", "overruled", "fewer_visits"]
    # exactly the target's bound: -0.5 against +0.5 is ruled out, -0.49 is not
    assert best_child(family((6, -0.5, 0.5), (5, 0.5, 0.5)), "visits", 1.0).q == 0.5
    assert best_child(family((6, -0.49, 0.5), (5, 0.5, 0.5)), "visits", 1.0).q == -0.49
    # a clearly worse child that would not have won anyway: the rule's pick stands
    root = family((6, 0.9, 0.6), (5, -0.5, 0.3))
    assert verdicts(root, "visits", 1.0) == ["most_visits", "clearly_worse"]
    # under the value rule the contenders are weighed among the rest: half of 2 visits
    root = family((6, -1.0, 0.5), (2, 0.8, 0.5), (1, 0.0, 0.5))
    assert verdicts(root, "value", 1.0) == ["clearly_worse", "overruled", "worse"]


def test_a_margin_holds_on_any_family() -> None:
    # Whatever the statistics, with margin 1 no commit has value <= -0.5 beside a
    # visited sibling at >= +0.5, under either rule.
    rng = random.Random(0)
    for _ in range(2000):
        stats = [
            (rng.choice([0, 1, 2, 3, 6]), rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]), 0.2)
            for _ in range(rng.randint(1, 5))
        ]
        root = family(*stats)
        for rule in ("visits", "value"):
            chosen = decide(root, rule, 1.0).chosen  # type: ignore[arg-type]
            best = max((c.q for c in root.children if c.fn > 0), default=None)
            assert not (best is not None and best >= 0.5 and chosen.q <= -0.5)


def test_early_stop_judges_the_child_the_margin_commits() -> None:
    root = family((8, -1.0, 0.5), (5, 0.9, 0.5))
    assert not early_stop(root, 3, 0.8, "visits")
    assert early_stop(root, 3, 0.8, "visits", margin=1.0)
