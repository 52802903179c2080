"""The units of work a search asks for, and the engine carries out.

A search never calls the model: each iteration is a generator that yields
one of these and is sent the answer (an :class:`Expansion`, the judge's
values, the embeddings), so the engine can put the work of many iterations
and many searches into the same forward calls.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rain_search.backends.base import ExpandRequest, Expansion


@dataclass
class Expand:
    """Propose children below the last state of ``path`` (and roll one sample on)."""

    path: Sequence[Any]
    request: ExpandRequest
    generator: torch.Generator


@dataclass
class Judge:
    """Score each of ``texts`` as the answer to ``prompt``; sent back: a list of floats."""

    prompt: str
    texts: list[str]


@dataclass
class Embed:
    """Embed ``texts``; sent back: a (len(texts), dim) tensor."""

    texts: list[str]


Work = Expand | Judge | Embed
Reply = Expansion | list[float] | torch.Tensor
Iteration = Generator[Work, Any, bool]
"""One search iteration: yields work, is sent each reply, returns whether it ran
(False: every free leaf was busy, try again after the next call)."""
