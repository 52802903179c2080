"""How the engine gets expansions decoded: one protocol, three ways.

- :class:`~rain_search.backends.slots.SlotDecoder`: every live row of every
  search in one forward call per turn (the default on a tree-cached backend).
- :class:`IsolatedDecoder`: one slot decoder per search, so every call's
  shapes, padding and kernels are those the search would get alone, and its
  answer is its solo answer bit for bit in any dtype (``batch_invariant``),
  at the price of one call per search per turn.
- :class:`DirectDecoder`: a backend without a tree cache expands one leaf at
  a time, at once, through its own ``expand``.

The engine talks to all three the same way: ``add`` work, ``call`` once a
turn, read each job's ``result`` when it is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rain_search.backends.base import Backend, ExpandRequest, Expansion
from rain_search.backends.hf import HFBackend
from rain_search.backends.slots import SlotDecoder
from rain_search.stats import Counters


class Pending(Protocol):
    """An expansion in flight; ``result`` is set when it is done."""

    result: Expansion | None


class Decoder(Protocol):
    """What the engine asks of whatever decodes its expansions."""

    @property
    def live(self) -> bool:
        """Is any expansion still decoding (a :meth:`call` would do work)?"""
        ...

    def add(
        self,
        path: Sequence[Any],
        request: ExpandRequest,
        generator: torch.Generator,
        counters: Counters,
    ) -> Pending:
        """Start expanding the last node of ``path``, charging ``counters`` its share."""
        ...

    def cancel(self, job: Pending) -> None: ...

    def call(self) -> Sequence[Pending]:
        """One turn's decoding; the expansions it finished, in the order they were added."""
        ...

    def release(self) -> None:
        """Give memory back (the engine has no search left)."""
        ...


def make_decoder(backend: Backend[Any], batch_invariant: bool = False) -> Decoder:
    """The decoder for ``backend``: shared slots, slots per search, or one leaf at a time."""
    if not isinstance(backend, HFBackend):
        return DirectDecoder(backend)
    return IsolatedDecoder(backend) if batch_invariant else SlotDecoder(backend)


@dataclass(eq=False)
class Done:
    """An expansion a :class:`DirectDecoder` ran at once."""

    result: Expansion | None


class DirectDecoder:
    """Runs each expansion when it is added, through the backend's own ``expand``."""

    def __init__(self, backend: Backend[Any]) -> None:
        self.backend = backend

    @property
    def live(self) -> bool:
        return False

    def add(
        self,
        path: Sequence[Any],
        request: ExpandRequest,
        generator: torch.Generator,
        counters: Counters,
    ) -> Done:
        before = self.backend.counters.copy()
        result = self.backend.expand(path, request, generator)
        counters.add(self.backend.counters - before)
        return Done(result)

    def cancel(self, job: Pending) -> None:
        """Nothing runs in the background: there is nothing to stop."""

    def call(self) -> list[Pending]:
        return []

    def release(self) -> None:
        """Nothing is held."""


class IsolatedDecoder:
    """A slot decoder per search (keyed by the counters its work is charged to).

    A search's rows never share a call with another search's, so the padding,
    the batch size and hence the kernels each call runs are the ones the search
    gets alone. The searches' decoders share the backend's key/value store,
    which only copies values.
    """

    def __init__(self, backend: HFBackend) -> None:
        self.backend = backend
        self.decoders: dict[int, SlotDecoder] = {}
        self.owner: dict[int, SlotDecoder] = {}  # id(job) -> its decoder

    @property
    def live(self) -> bool:
        return any(decoder.live for decoder in self.decoders.values())

    def add(
        self,
        path: Sequence[Any],
        request: ExpandRequest,
        generator: torch.Generator,
        counters: Counters,
    ) -> Pending:
        decoder = self.decoders.get(id(counters))
        if decoder is None:
            decoder = self.decoders[id(counters)] = SlotDecoder(self.backend)
        job = decoder.add(path, request, generator, counters)
        self.owner[id(job)] = decoder
        return job

    def cancel(self, job: Pending) -> None:
        decoder = self.owner.pop(id(job), None)
        if decoder is not None:
            decoder.cancel(job)

    def call(self) -> list[Pending]:
        finished: list[Pending] = []
        for key, decoder in list(self.decoders.items()):
            if decoder.live:
                finished += decoder.call()
            if not decoder.live:
                decoder.layout.release()
                del self.decoders[key]
        for job in finished:
            self.owner.pop(id(job), None)
        return finished

    def release(self) -> None:
        if not self.live:
            self.decoders, self.owner = {}, {}
            self.backend.store.release()
