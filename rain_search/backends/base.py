"""What the search needs from a language model, as a small protocol.

The tree search only ever asks three things of a model: encode the prompt,
propose token sets below a node (optionally rolling one sample on to the next
punctuation mark for the judge), and fold a committed node into the prefix.
Keeping it this narrow lets the tree logic run against a scripted fake in tests.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from rain_search.stats import Counters

PUNCTUATION = (",", ".", "?", ":", ";", "!", "\n")
"""Marks that end a clause: rollouts stop at them so the judge reads whole clauses."""


@dataclass(frozen=True)
class ExpandRequest:
    """How to propose children below a node.

    ``mode="top"``: the ``count`` most likely single tokens not in ``exclude``.
    ``mode="sample"``: the greedy continuation (if ``greedy``) plus ``count``
    sampled ones, each ``length`` tokens, every token drawn from the top-k at
    ``temperature``. ``rollout_tokens > 0`` also samples one continuation from
    the node (no top-k) until punctuation, EOS or that many tokens.
    """

    length: int = 1
    mode: Literal["top", "sample"] = "sample"
    count: int = 0
    greedy: bool = False
    exclude: Collection[tuple[int, ...]] = ()
    top_k: int = 15
    temperature: float = 1.0
    rollout_tokens: int = 0
    rollout_temperature: float = 1.0


@dataclass
class Proposal:
    """One proposed child: its tokens, their log-probability, its backend state."""

    token_ids: tuple[int, ...]
    log_prob: float
    greedy: bool
    state: Any


@dataclass
class Expansion:
    proposals: list[Proposal]
    rollout: tuple[int, ...]


class Backend(Protocol):
    counters: Counters
    eos_token_ids: frozenset[int]

    def start(self, prompt_ids: Sequence[int]) -> Any:
        """Encode the prompt; return the root's state."""
        ...

    def expand(
        self, path: Sequence[Any], request: ExpandRequest, generator: torch.Generator
    ) -> Expansion:
        """Propose children of the last node of ``path`` (states from the root down)."""
        ...

    def advance(self, root: Any, child: Any) -> Any:
        """The state of ``child`` once committed: it becomes the new root."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str: ...
