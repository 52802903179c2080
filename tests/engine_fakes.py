"""A fake backend whose samples depend only on where they are drawn, not on an RNG.

With it, the order of work and the RNG streams cannot change what is proposed,
so a search run one leaf at a time can be compared visit for visit with a
recorded trace, and with the same search run by the batched engine.
"""

from __future__ import annotations

import hashlib

import torch
from test_search import RANKING, FakeBackend

from rain_search.backends.base import ExpandRequest
from rain_search.tree import Node


def pick(prefix: tuple[int, ...], attempt: int, position: int) -> int:
    """A word from RANKING fixed by the prefix, the try and the position in the set."""
    digest = hashlib.blake2b(repr((prefix, attempt, position)).encode(), digest_size=4)
    return RANKING[1 + int.from_bytes(digest.digest(), "little") % (len(RANKING) - 1)]


class ScriptedBackend(FakeBackend):
    """FakeBackend with hashed samples and a rollout that depends on the leaf."""

    def sample(
        self,
        prefix: tuple[int, ...],
        attempt: int,
        request: ExpandRequest,
        generator: torch.Generator,
    ) -> tuple[int, ...]:
        tries = attempt + len(request.exclude)
        return tuple(pick(prefix, tries, i) for i in range(request.length))

    def rollout(self, prefix: tuple[int, ...]) -> tuple[int, ...]:
        return (pick(prefix, -1, 0),)


def tree_trace(root: Node) -> list[list[object]]:
    """Every node's tokens, visits and value, depth first: what the search decided."""
    return [
        [list(node.token_ids), round(node.n, 6), node.fn, round(node.q, 6)] for node in root.walk()
    ]
