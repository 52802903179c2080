"""The RAIN search tree: nodes and the arithmetic on them.

Everything here is plain Python over node statistics so the search's maths
(PUCT, backup, similarity update, dynamic addition, commit) can be tested with
exact numbers and no model. Model work (proposing token sets, caching keys and
values) lives behind an opaque ``state`` each node carries for its backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rain_search.config import CommitRule, PendingValue
from rain_search.result import FinishReason
from rain_search.steps import Verdict


@dataclass(eq=False)
class Node:
    """A token set appended to its parent's text.

    ``n`` may be fractional (similar siblings share visits), ``fn`` counts real
    visits only, ``q`` is the mean value in [-1, 1]. ``weight`` is the set's
    sequence probability (clipped for the greedy set), ``prior`` that weight
    normalised among the siblings it was proposed with; ``p`` is what PUCT uses
    (the prior mixed with a uniform one while the parent is the root).
    ``finish`` is why the answer ends at this node ("eos", "stop", "length"),
    or None while it can grow. ``pending`` counts visits selected but not yet
    backed up (virtual losses while leaves run in parallel); ``busy`` marks a
    node whose children are being proposed, so no second leaf expands it.
    """

    token_ids: tuple[int, ...]
    parent: Node | None = None
    depth: int = 0
    weight: float = 1.0
    prior: float = 1.0
    p: float = 1.0
    log_prob: float = 0.0
    greedy: bool = False
    state: Any = None
    finish: FinishReason | None = None
    children: list[Node] = field(default_factory=list)
    n: float = 0.0
    fn: int = 0
    q: float = 0.0
    embedding: torch.Tensor | None = None
    embedding_visits: int = 0
    pending: int = 0
    busy: bool = False

    @property
    def terminal(self) -> bool:
        return self.finish is not None

    def path_from(self, ancestor: Node) -> list[Node]:
        """Nodes from just below ``ancestor`` down to ``self``, in order."""
        path: list[Node] = []
        node: Node | None = self
        while node is not None and node is not ancestor:
            path.append(node)
            node = node.parent
        if node is None:
            raise ValueError("node is not a descendant of the given ancestor")
        return path[::-1]

    def add_value(self, value: float, weight: float = 1.0) -> None:
        """Fold ``value`` into the running mean ``q`` with visit weight ``weight``."""
        total = self.n + weight
        self.q = (self.q * self.n + value * weight) / total
        self.n = total

    def walk(self) -> Iterator[Node]:
        """This node and every descendant, depth first."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children)


@dataclass
class ValueRange:
    """Bounds used to normalise q for PUCT; start at [-1, 1] and only widen."""

    low: float = -1.0
    high: float = 1.0

    def update(self, value: float) -> None:
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def normalise(self, q: float) -> float:
        return (q - self.low) / (self.high - self.low)


def puct_score(
    child: Node,
    parent_visits: float,
    c: float,
    bounds: ValueRange,
    pending_value: PendingValue = "mean",
) -> float:
    """Q̂ + c·p·sqrt(n(parent)) / (1 + n(child)); unvisited children have Q̂ = 0.

    Visits in flight count in ``n`` at once, so leaves selected in one round
    spread over the tree. With ``pending_value="mean"`` they leave Q̂ as it is
    (a virtual visit): a child the judge liked keeps getting leaves until its
    bonus is spent, as one leaf at a time would give it; ``"loss"`` scores them
    as the worst value seen (a virtual loss), which spreads a round's leaves by
    prior whatever the values say. With nothing pending both are plain PUCT.
    """
    visits = child.n + child.pending
    exploit = 0.0
    if pending_value == "loss" and visits > 0:
        exploit = bounds.normalise((child.q * child.n + bounds.low * child.pending) / visits)
    elif child.n > 0:
        exploit = bounds.normalise(child.q)
    return exploit + c * child.p * math.sqrt(parent_visits) / (1.0 + visits)


def select_child(
    node: Node, c: float, bounds: ValueRange, pending_value: PendingValue = "mean"
) -> Node:
    """The child with the highest PUCT score (first one wins ties)."""
    return ranked_children(node, c, bounds, pending_value)[0]


def ranked_children(
    node: Node, c: float, bounds: ValueRange, pending_value: PendingValue = "mean"
) -> list[Node]:
    """Children by PUCT score, best first (ties keep their order)."""
    visits = node.n + node.pending
    return sorted(
        node.children, key=lambda child: -puct_score(child, visits, c, bounds, pending_value)
    )


def select_leaf(
    root: Node, c: float, bounds: ValueRange, pending_value: PendingValue = "mean"
) -> list[Node] | None:
    """The path PUCT picks from ``root`` to a leaf that is free to visit, or None.

    Descends by score; a leaf with a visit in flight (its children being
    proposed, or an ended answer being judged) is skipped and the next-best
    branch tried, so parallel leaves never expand the same node twice nor pile
    onto a leaf that needs no model work. With nothing in flight this is the
    greedy descent.
    """
    if not root.children:
        return None if root.busy or root.pending else [root]
    for child in ranked_children(root, c, bounds, pending_value):
        below = select_leaf(child, c, bounds, pending_value)
        if below is not None:
            return [root, *below]
    return None


def add_pending(path: Sequence[Node], visits: int) -> None:
    """Mark (``visits=1``) or clear (``-1``) a visit in flight along ``path``."""
    for node in path:
        node.pending += visits


def clip_greedy(weights: Sequence[float], greedy_index: int | None) -> list[float]:
    """Sequence probabilities with the greedy set's clipped by its sampled siblings'.

    As in the reference: first capped at the sum of the sampled ones, then
    raised to at least max + min of them (so with one sampled sibling the
    greedy set weighs twice as much), so the greedy path can neither swamp
    nor vanish next to the samples.
    """
    clipped = list(weights)
    sampled = [w for i, w in enumerate(weights) if i != greedy_index]
    if greedy_index is not None and sampled:
        capped = min(clipped[greedy_index], sum(sampled))
        clipped[greedy_index] = max(capped, max(sampled) + min(sampled))
    return clipped


def normalise(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    if total <= 0.0:
        return [1.0 / len(weights)] * len(weights)
    return [w / total for w in weights]


def assign_priors(children: Sequence[Node], single_token: bool, root_noise: float) -> None:
    """Priors of a fresh expansion: normalised weights, mixed with uniform at the root.

    Children's ``log_prob`` are under the sampling distribution (top-k at the
    sampling temperature); 1-token sets (the top tokens) are not clipped.
    """
    greedy = next((i for i, c in enumerate(children) if c.greedy), None)
    weights = [math.exp(child.log_prob) for child in children]
    if not single_token:
        weights = clip_greedy(weights, greedy)
    for child, weight, prior in zip(children, weights, normalise(weights), strict=True):
        child.weight, child.prior, child.p = weight, prior, prior
    if children and children[0].parent is not None and children[0].parent.parent is None:
        mix_root_noise(children, root_noise)


def add_prior(parent: Node, child: Node, root_noise: float) -> None:
    """Prior of a child added by dynamic node addition; its siblings keep theirs.

    Its weight is normalised over the siblings' weights and its own, and at the
    root mixed with a uniform prior over the grown family, as the reference does.
    """
    child.weight = math.exp(child.log_prob)
    total = sum(sibling.weight for sibling in parent.children)
    child.prior = child.p = child.weight / total if total > 0 else 1.0 / len(parent.children)
    if parent.parent is None:
        child.p = (1.0 - root_noise) * child.prior + root_noise / len(parent.children)


def mix_root_noise(children: Sequence[Node], weight: float) -> None:
    """Set p = (1 - w)·prior + w / K over the K children of the root.

    Applied when children are proposed at the root and to the new root's
    children when a step is committed, so exploration at the decision being
    made never collapses onto the model's own favourite. The mix is fixed
    (0.75·p + 0.25/K in the paper), not a random draw.
    """
    if not children:
        return
    for child in children:
        child.p = (1.0 - weight) * child.prior + weight / len(children)


def backup(path: Sequence[Node], value: float, bounds: ValueRange) -> None:
    """Add ``value`` to every node on the path: running mean, no discount."""
    for node in path:
        node.add_value(value)
        node.fn += 1
    bounds.update(value)


@dataclass(frozen=True)
class Fold:
    """One leaf's embeddings folded into its path, worked out before they are stored.

    ``means[i]`` is ``nodes[i]``'s running mean with the leaf's vector for it
    added; ``similar`` pairs each sibling of a path node with cos(the path
    node's new mean, the sibling's mean), the pairs the similarity update
    reads. The engine works out the folds of many searches' leaves in one pass
    (:func:`fold_embeddings`); each leaf stores its own when it resumes.
    """

    nodes: Sequence[Node]
    means: Sequence[torch.Tensor]
    similar: Sequence[tuple[Node, float]]

    def apply(self) -> None:
        """Store the new means: each node's embedding is the mean over its visits."""
        for node, mean in zip(self.nodes, self.means, strict=True):
            node.embedding = mean  # never changed in place: no copy needed
            node.embedding_visits += 1


Visit = tuple[Sequence[Node], Sequence[torch.Tensor]]
"""A leaf's path nodes below the root, and one vector per node (its text to the leaf's end)."""


def fold_embeddings(visits: Sequence[Visit]) -> list[Fold]:
    """The fold of every visit, in a few tensor calls for all of them.

    Row by row this is the one-vector update and the one-pair cosine (both
    work within a row), so folding many visits at once changes no number. A
    fold reads its tree as it stands: visits of one tree must be folded, and
    applied, in turn (two leaves of a tree share nodes), so the engine folds
    one leaf per search at a time.
    """
    rows = [
        (node, vector) for nodes, vectors in visits for node, vector in zip_rows(nodes, vectors)
    ]
    means = running_means(rows)
    pairs = [
        (visit, mean, sibling)
        for visit, (node, _), mean in zip(owners(visits), rows, means, strict=True)
        if node.parent is not None
        for sibling in node.parent.children
        if sibling is not node and sibling.embedding is not None
    ]
    sims = cosines([(mean, sibling.embedding) for _, mean, sibling in pairs])  # type: ignore[misc]
    similar: list[list[tuple[Node, float]]] = [[] for _ in visits]
    for (visit, _, sibling), sim in zip(pairs, sims, strict=True):
        similar[visit].append((sibling, sim))
    folds, start = [], 0
    for (nodes, _), shared in zip(visits, similar, strict=True):
        folds.append(Fold(nodes=nodes, means=means[start : start + len(nodes)], similar=shared))
        start += len(nodes)
    return folds


def zip_rows(
    nodes: Sequence[Node], vectors: Sequence[torch.Tensor]
) -> list[tuple[Node, torch.Tensor]]:
    if len(nodes) != len(vectors):
        raise ValueError(
            f"the embedder returned {len(vectors)} vectors for {len(nodes)} texts: "
            "an embedder must return one vector per text"
        )
    return list(zip(nodes, vectors, strict=True))


def owners(visits: Sequence[Visit]) -> list[int]:
    """The visit index of each row of the visits laid end to end."""
    return [visit for visit, (nodes, _) in enumerate(visits) for _ in nodes]


def running_means(rows: Sequence[tuple[Node, torch.Tensor]]) -> list[torch.Tensor]:
    """Each node's mean embedding with ``vector`` added: old + (vector − old) / visits.

    A first visit's mean is its vector. Rows of one kind (dtype, shape,
    device) are updated in one expression.
    """
    means = [vector for _, vector in rows]
    seen = [i for i, (node, _) in enumerate(rows) if node.embedding is not None]
    for group in by_kind(seen, [vector for _, vector in rows]):
        old = torch.stack([rows[i][0].embedding for i in group])  # type: ignore[misc]
        new = torch.stack([rows[i][1] for i in group])
        visits = [[rows[i][0].embedding_visits + 1] for i in group]
        updated = old + (new - old) / torch.tensor(visits, dtype=old.dtype, device=old.device)
        for i, mean in zip(group, updated.unbind(), strict=True):
            means[i] = mean
    return means


def cosines(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """cos(a, b) for every pair: one call per kind of vector (the search asks after
    every leaf; a call per pair was most of its tensor operations)."""
    sims = [0.0] * len(pairs)
    for group in by_kind(range(len(pairs)), [a for a, _ in pairs]):
        left = torch.stack([pairs[i][0] for i in group])
        right = torch.stack([pairs[i][1] for i in group])
        values = torch.nn.functional.cosine_similarity(left, right, dim=-1).tolist()
        for i, value in zip(group, values, strict=True):
            sims[i] = value
    return sims


def by_kind(indices: Iterable[int], tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """``indices`` grouped by their tensor's dtype, shape and device (what stacks together;
    searches with different embedders share an engine)."""
    groups: dict[tuple[torch.dtype, torch.Size, torch.device], list[int]] = {}
    for i in indices:
        tensor = tensors[i]
        groups.setdefault((tensor.dtype, tensor.shape, tensor.device), []).append(i)
    return list(groups.values())


def similarity_update(fold: Fold, value: float, threshold: float, weight: float) -> int:
    """Share a visit with siblings whose embedding is close to a path node's.

    Each sibling ``s`` of a path node ``x`` with cos(x, s) >= threshold gets a
    fractional visit γ·sim carrying ``value``: text the model would say the
    same way deserves the same verdict. Returns how many siblings were updated.
    """
    updated = 0
    for sibling, sim in fold.similar:
        if sim >= threshold:
            sibling.add_value(value, weight * sim)
            updated += 1
    return updated


def children_alike(node: Node, set_length: int, threshold: float) -> bool:
    """True when the children's embeddings barely vary (norm of variance < threshold·length).

    Needs every child embedded (visited) and at least two of them.
    """
    embeddings = [child.embedding for child in node.children if child.embedding is not None]
    if len(embeddings) < 2 or len(embeddings) < len(node.children):
        return False  # one child has no variance (the reference's is NaN): never alike
    variance = torch.stack(embeddings).var(dim=0)  # sample variance, as torch.var
    return float(variance.norm()) < threshold * set_length


def needs_more_children(
    node: Node, set_length: int, variance_threshold: float, max_children: int
) -> bool:
    """Dynamic node addition: all children visited, all negative, alike, room left.

    A single child counts as alike: the paper widens a node whose children are
    too alike to choose between, and one child (every sample proposed the same
    set) is the extreme case. Without this, a node whose samples collapse keeps
    its one child whatever the judge says of it.
    """
    children = node.children
    return (
        bool(children)
        and len(children) < max_children
        and all(child.fn > 0 for child in children)
        and all(child.q < 0 for child in children)
        and (len(children) == 1 or children_alike(node, set_length, variance_threshold))
    )


@dataclass(frozen=True)
class Decision:
    """Which child a step commits and why each child was kept or left.

    The commit and :meth:`~rain_search.result.RainResult.explain` read the
    same record, so what the explanation says is what the commit did.
    """

    children: tuple[Node, ...]
    chosen: Node
    verdicts: tuple[Verdict, ...]  # one per child, in order

    def verdict(self, child: Node) -> Verdict:
        index = next(i for i, c in enumerate(self.children) if c is child)
        return self.verdicts[index]


def decide(
    node: Node, rule: CommitRule = "visits", margin: float | None = None, share: float = 0.5
) -> Decision:
    """The child a step commits under ``rule``, and a verdict on every child.

    ``"visits"``: most visits wins, ties go to the higher value (the paper's
    rule: one leaf at a time hands visits to what the judge liked, so visits
    are the judge's verdict). ``"value"``: the highest value among children
    with at least ``share`` of the most real visits (ties: more visits). With
    parallel leaves a round hands out its visits before their values are back,
    so the most visited child can be one the round's values turned against.

    ``margin`` (beyond the paper, ``commit_margin``): a child whose value is
    ``margin`` or more below the best visited child's is never committed and
    the rule picks among the rest. A small budget can end a step before the
    visits catch up with the values (one leaf at a time, 12 iterations: 6
    visits at -1.00 were kept over 5 at +1.00).
    """
    out = clearly_worse(node.children, margin)
    eligible = [child for child in node.children if id(child) not in out]
    chosen, how, threshold = pick(eligible, rule, share)
    overruled = bool(out) and chosen is not pick(node.children, rule, share)[0]
    verdicts = tuple(
        ("overruled" if overruled else how)
        if child is chosen
        else left(child, chosen, how, out, threshold)
        for child in node.children
    )
    return Decision(children=tuple(node.children), chosen=chosen, verdicts=verdicts)


def pick(children: Sequence[Node], rule: CommitRule, share: float) -> tuple[Node, Verdict, float]:
    """The child ``rule`` commits among ``children``, how it won, and the real visits a
    child needed to be weighed (0 when visits decide)."""
    most = max(children, key=lambda child: (child.n, child.q))
    if rule == "visits" or most.fn == 0:
        return most, "most_visits", 0.0
    threshold = share * most.fn
    contenders = [child for child in children if child.fn >= threshold]
    return max(contenders, key=lambda child: (child.q, child.n)), "best_value", threshold


def clearly_worse(children: Sequence[Node], margin: float | None) -> set[int]:
    """Ids of the children valued ``margin`` or more below the best visited one."""
    visited = [child.q for child in children if child.fn > 0]
    if margin is None or not visited:
        return set()
    floor = max(visited) - margin + 1e-9
    return {id(child) for child in children if child.n > 0 and child.q <= floor}


def left(child: Node, chosen: Node, how: Verdict, out: set[int], threshold: float) -> Verdict:
    """Why ``child`` was not committed when ``chosen`` won by ``how`` (its rule's verdict)."""
    if id(child) in out:
        return "clearly_worse"
    if child.fn == 0:
        return "unvisited"
    if how == "best_value" and child.fn < threshold:
        return "few_visits"
    if how == "most_visits":  # ranked by (n, q)
        if (child.n, child.q) == (chosen.n, chosen.q):
            return "tied"
        return "fewer_visits" if child.n < chosen.n else "worse"
    if (child.q, child.n) == (chosen.q, chosen.n):  # ranked by (q, n)
        return "tied"
    return "worse" if child.q < chosen.q else "fewer_visits"


def best_child(
    node: Node, rule: CommitRule = "visits", margin: float | None = None, share: float = 0.5
) -> Node:
    """The child a step commits (:func:`decide` without the verdicts)."""
    return decide(node, rule, margin, share).chosen


def early_stop(
    root: Node, visits: int, value: float, rule: CommitRule = "visits", margin: float | None = None
) -> bool:
    """The child to commit has more than ``visits`` real visits and q above ``value``."""
    if not root.children:
        return False
    best = best_child(root, rule, margin)
    return best.fn > visits and best.q > value


def all_judged_bad(root: Node) -> bool:
    """Every child the search visited scored below zero (and it visited one)."""
    visited = [child for child in root.children if child.fn > 0]
    return bool(visited) and all(child.q < 0 for child in visited)


@dataclass(frozen=True)
class Visits:
    """A node's visit statistics at one moment: what a removed child had brought its parent."""

    n: float
    fn: int
    q: float

    @classmethod
    def of(cls, node: Node) -> Visits:
        return cls(n=node.n, fn=node.fn, q=node.q)


def drop_child_visits(node: Node, child: Visits) -> None:
    """Take a removed child's visits (and their values) out of ``node``'s statistics."""
    left = node.n - child.n
    node.q = (node.q * node.n - child.q * child.n) / left if left > 1e-9 else 0.0
    node.n = max(left, 0.0)
    node.fn = max(node.fn - child.fn, 0)


def count_nodes(root: Node) -> int:
    return sum(1 for _ in root.walk())
