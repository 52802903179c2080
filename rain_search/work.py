"""What passes between a search and the engine: units of work, and the policy protocol.

A search never calls the model: each iteration is a generator that yields
one of these and is sent the answer (an :class:`Expansion`, the judge's
values, the embeddings), so the engine can put the work of many iterations
and many searches into the same forward calls. The engine knows a search only
as a :class:`Policy`: iterations out, their ends in, a step to commit.

Words kept apart on both sides of this seam: a *step* is one committed token
set (its iterations, then its commit); a *call* is one forward call of the
decoder, shared by every row in it; a *position* is a token's index in a
sequence; an *iteration* is one leaf's select, expand, judge and back up.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from rain_search.admission import Footprint
from rain_search.backends.base import ExpandRequest, Expansion
from rain_search.embeddings import Embedder
from rain_search.evaluators import Evaluator
from rain_search.result import RainResult, StepStats
from rain_search.stats import Counters
from rain_search.tree import Fold, Node


@dataclass(frozen=True)
class ExpandKey:
    """Which expansion a unit of work is: equal keys, the same children drawn the same way.

    An expansion is decided by the search's seed, the answer so far, the tokens
    of the path below the root, the leaf's real visits when it was asked (its
    random stream is keyed by them) and the request; a prefetched expansion
    stands in for an iteration's only when all of these agree, which is why
    prefetching changes no decision.
    """

    seed: int
    answer: tuple[int, ...]
    path: tuple[int, ...]  # the path's tokens below the root
    visits: int
    request: ExpandRequest

    def __post_init__(self) -> None:
        # ExpandRequest is frozen, but ``exclude`` may be a list: hash it as a tuple
        if not isinstance(self.request.exclude, tuple):
            exclude = tuple(self.request.exclude)
            object.__setattr__(self, "request", replace(self.request, exclude=exclude))


@dataclass
class Expand:
    """Propose children below the last state of ``path`` (and roll one sample on)."""

    path: Sequence[Any]
    request: ExpandRequest
    generator: torch.Generator
    key: ExpandKey | None = None  # equal keys: the same work (a prefetched expansion stands in)


@dataclass
class Judge:
    """Score each of ``texts`` as the answer to ``prompt`` (a part of :class:`Assess`)."""

    prompt: str
    texts: list[str]


@dataclass
class Embed:
    """Embed ``texts``, one per node of ``nodes``: the text from that node to the leaf's
    end (a part of :class:`Assess`)."""

    texts: list[str]
    nodes: Sequence[Node]


@dataclass
class Assess:
    """Judge a leaf's answer and embed its path's texts, in one engine pass.

    The texts to embed do not depend on the verdict, so both are asked at
    once: a leaf is backed up one pass after its rollout, not two. Sent back:
    an :class:`Assessed`.
    """

    judge: Judge
    embed: Embed | None  # None for a leaf at the root (no path node to embed)


@dataclass(frozen=True)
class Assessed:
    """The judge's values for :attr:`Assess.judge`, and the fold of the embedded vectors
    into :attr:`Embed.nodes` (None when nothing was embedded)."""

    values: list[float]
    fold: Fold | None


Work = Expand | Assess
Reply = Expansion | Assessed
Iteration = Generator[Work, Any, bool]
"""One search iteration: yields work, is sent each reply, returns whether it ran
(False: every free leaf was busy, try again after the next call)."""


class Policy(Protocol):
    """One search as the engine drives it (:class:`~rain_search.policy.TreeSearch`).

    The engine encodes the prompt and calls :meth:`begin`; then, over and over,
    it starts the iterations :meth:`next_iteration` hands out, answers their
    work, and reports each one's end to :meth:`iteration_done`. Once
    ``closing`` is set it drops the iterations still running; once
    ``ready_to_commit`` it calls :meth:`finish_step` and passes the steps it
    returns to the reader, until ``result`` is set. Between calls it also
    starts the expansions :meth:`prefetch` asks for ahead of the iterations,
    and hands one to the iteration whose :class:`Expand` has its key.
    """

    prompt: str  # the text the judge reads as the question
    evaluator: Evaluator  # this search's judge: searches on one engine may judge differently
    embedder: Embedder
    cost: Counters  # this search's share of every call, charged by the engine
    result: RainResult | None  # set by the last step's finish_step
    closing: bool  # the step has what it needs: running iterations may be dropped
    cancelled: Callable[[], bool]  # set by the reader; checked before each iteration

    @property
    def ready_to_commit(self) -> bool:
        """The step is closed and no iteration of it is still running."""
        ...

    def footprint(self, prompt_tokens: int) -> Footprint:
        """The most rows and key/value positions the search can hold in the decoder at once."""
        ...

    def begin(self, root_state: Any, prompt_ids: Sequence[int]) -> None:
        """Start from the encoded prompt, ``root_state`` being the backend's state for it."""
        ...

    def next_iteration(self) -> Iteration | None:
        """A new iteration to run now, or None while the step needs no more."""
        ...

    def prefetch(self, known: Mapping[ExpandKey, Expansion | None], running: int) -> list[Expand]:
        """Expansions to start ahead (none of ``known``: this step's, done or not yet),
        ``running`` of them still decoding; an iteration whose :class:`Expand` has the
        same key gets the result."""
        ...

    def iteration_done(self, ran: bool) -> None:
        """An iteration ended (``ran``: it visited a leaf; False: nothing was free, or dropped)."""
        ...

    def finish_step(self) -> list[StepStats]:
        """Commit the step (or take one back); the steps now final, for the reader.

        Sets ``result`` when the answer ends.
        """
        ...
