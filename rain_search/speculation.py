"""Speculative leaves: expansions started ahead of the iterations that will ask for them.

With ``speculative_leaves``, the engine decodes expansions for the leaves a
search is likely to visit next in the same forward calls as the running
iterations. Nothing is decided by a guess: an iteration takes a prefetched
expansion only when its own :class:`~rain_search.work.Expand` has the same
:class:`~rain_search.work.ExpandKey` (the same node, visit and request, hence
the same children drawn from the same random stream), so the search decides
exactly as it does without them, in fewer sequential calls when the guesses
are right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from rain_search.backends.base import ExpandRequest, Expansion, Proposal
from rain_search.config import RainConfig
from rain_search.tree import Node, ValueRange, add_pending, assign_priors, select_leaf
from rain_search.work import Expand, ExpandKey


class Planner(Protocol):
    """What guessing needs from the search: the work its iterations would ask for.

    :class:`~rain_search.policy.TreeSearch` is one; the guesses must be built by the
    very rules the iterations use, or their keys would never match.
    """

    config: RainConfig
    bounds: ValueRange
    seed: int
    answer: list[int]

    def expand_request(self, path: list[Node]) -> ExpandRequest:
        """What expanding the last node of ``path`` asks of the backend."""
        ...

    def generator_for(self, path: list[Node], visit: int) -> torch.Generator:
        """The random stream of the work at the last node of ``path``, at its ``visit``."""
        ...

    def make_children(self, path: list[Node], proposals: Sequence[Proposal]) -> list[Node]:
        """Nodes for the proposals below the last node of ``path`` (not yet attached)."""
        ...


def expand_key(
    seed: int, answer: Sequence[int], path: Sequence[Node], request: ExpandRequest
) -> ExpandKey:
    """The key of expanding the last node of ``path`` (root first) with ``request``.

    Equal for two expansions exactly when they would propose the same children:
    the random stream is keyed by the same seed, answer, path and visit.
    """
    return ExpandKey(
        seed=seed,
        answer=tuple(answer),
        path=tuple(token for node in path[1:] for token in node.token_ids),
        visits=path[-1].fn,
        request=request,
    )


def guess_expansions(
    search: Planner, root: Node, known: Mapping[ExpandKey, Expansion | None], room: int
) -> list[Expand]:
    """Up to ``room`` expansions of the leaves parallel leaves would pick next, none of ``known``.

    Each pick's path counts as a visit in flight, so the next pick goes
    elsewhere, as a round of parallel leaves would. Expansions already
    prefetched and done are looked through as if their children were in the
    tree, so the guesses reach below leaves not yet visited. The tree is left
    as it was found.
    """
    config = search.config
    marked: list[list[Node]] = []  # paths carrying a pending visit for a guess
    opened: list[Node] = []  # leaves given a done expansion's children for the look
    found: list[Expand] = []
    try:
        for _ in range(4 * (room + len(known)) + 8):
            path = select_leaf(root, config.c_puct, search.bounds, config.pending_value)
            if path is None or len(found) >= room:
                break
            leaf = path[-1]
            request = search.expand_request(path)
            key = expand_key(search.seed, search.answer, path, request)
            done = known.get(key)
            if done is not None and done.proposals and not leaf.terminal:
                leaf.children = search.make_children(path, done.proposals)
                assign_priors(leaf.children, request.length == 1, config.root_noise)
                opened.append(leaf)
                continue
            add_pending(path, 1)
            marked.append(path)
            if key not in known and not leaf.terminal:
                generator = search.generator_for(path, leaf.fn)
                states = [node.state for node in path]
                found.append(Expand(states, request, generator, key=key))
    finally:
        for path in marked:
            add_pending(path, -1)
        for leaf in opened:
            leaf.children = []
    return found
