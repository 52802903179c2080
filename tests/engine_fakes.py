"""A fake backend whose samples depend only on where they are drawn, not on an RNG.

With it, the order of work and the RNG streams cannot change what is proposed,
so a search run one leaf at a time can be compared visit for visit with a
recorded trace, and with the same search run by the batched engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from test_search import BAD, EOS, RANKING, FakeBackend

from rain_search.backends.base import ExpandRequest, Expansion, Proposal
from rain_search.tree import Node


def pick(prefix: tuple[int, ...], attempt: int, position: int) -> int:
    """A word from RANKING fixed by the prefix, the try and the position in the set."""
    digest = hashlib.blake2b(repr((prefix, attempt, position)).encode(), digest_size=4)
    return RANKING[1 + int.from_bytes(digest.digest(), "little") % (len(RANKING) - 1)]


class ScriptedBackend(FakeBackend):
    """FakeBackend with hashed samples and a rollout that depends on the leaf."""

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
                ids = tuple(
                    pick(prefix, attempt + len(request.exclude), i) for i in range(request.length)
                )
                rows.append((ids, False))
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
        rollout = (pick(prefix, -1, 0),) if request.rollout_tokens else ()
        return Expansion(proposals, rollout)


def tree_trace(root: Node) -> list[list[object]]:
    """Every node's tokens, visits and value, depth first: what the search decided."""
    return [
        [list(node.token_ids), round(node.n, 6), node.fn, round(node.q, 6)] for node in root.walk()
    ]
