"""What the search needs from a language model, as a small protocol.

The tree search only ever asks three things of a model: encode the prompt,
propose token sets below a node (optionally rolling one sample on to the next
punctuation mark for the judge), and fold a committed node into the prefix.
Keeping it this narrow lets the tree logic run against a scripted fake in tests.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import torch

from rain_search.stats import Counters

PUNCTUATION = (",", ".", "?", ":", ";", "\n")
"""Marks that end a clause: a rollout stops once its text ends with one, so the judge
reads whole clauses (the paper's set)."""


@dataclass(frozen=True)
class ExpandRequest:
    """How to propose children below a node.

    ``mode="top"``: the ``count`` most likely single tokens not in ``exclude``.
    ``mode="sample"``: the greedy continuation (if ``greedy``) plus ``count``
    sampling tries, each ``length`` tokens, every token drawn from the top-k at
    ``temperature``; of the tries, the first ``keep`` distinct ones not in
    ``exclude`` are kept (``None``: all). A proposal's log-probability is under
    that same distribution (top-k renormalised, at ``temperature``), as the
    reference computes priors. ``rollout_tokens > 0`` also samples one
    continuation from the node (no top-k) until its text ends with punctuation
    (``rollout_until="punctuation"``), EOS, or that many tokens.
    """

    length: int = 1
    mode: Literal["top", "sample"] = "sample"
    count: int = 0
    keep: int | None = None
    greedy: bool = False
    exclude: Collection[tuple[int, ...]] = ()
    top_k: int = 15
    temperature: float = 1.0
    rollout_tokens: int = 0
    rollout_until: Literal["punctuation", "eos"] = "punctuation"
    rollout_temperature: float = 1.0


@dataclass
class Proposal:
    """One proposed child: its tokens, their log-probabilities, its backend state."""

    token_ids: tuple[int, ...]
    token_log_probs: tuple[float, ...]
    greedy: bool
    state: Any

    @property
    def log_prob(self) -> float:
        """Log-probability of the whole set under the sampling distribution."""
        return sum(self.token_log_probs)


@dataclass
class Expansion:
    proposals: list[Proposal]
    rollout: tuple[int, ...]


StateT = TypeVar("StateT")
"""A backend's per-node state (a slice of the tree-shared cache, the whole token sequence...)."""


class Backend(Protocol[StateT]):
    """A language model as the search sees it, generic over what it keeps per node.

    The search never looks inside a state: it hands the backend the states of a
    path (root first) and stores what comes back on the tree's nodes.
    """

    counters: Counters
    eos_token_ids: frozenset[int]

    def start(self, prompt_ids: Sequence[int]) -> StateT:
        """Encode the prompt; return the root's state."""
        ...

    def expand(
        self, path: Sequence[StateT], request: ExpandRequest, generator: torch.Generator
    ) -> Expansion:
        """Propose children of the last node of ``path`` (states from the root down)."""
        ...

    def advance(self, root: StateT, child: StateT) -> StateT:
        """The state of ``child`` once committed: it becomes the new root."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str: ...
