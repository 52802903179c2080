"""The slot decoder's key/value storage: fixed slots written in place.

Every row of the shared batch owns a slot: one buffer (layers, 2, slots,
heads, columns, head_dim) holds every layer's keys and values, each row's
context ending at the same column so one forward call appends every row's
next position in place. Rows that join are written into free slots with one
gather from the :class:`~rain_search.backends.store.KVStore` for all of
them; the candidates of every expansion that finishes in a call are copied
out to the store with one indexed copy; the cache the model sees is a view
of the first slots. Only when a context does not fit (longer than the
columns to the right edge, or no column left for the next token) is the pool
rebuilt (vLLM's fixed slots refilled as work finishes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from rain_search.backends.kv import roomy_cache
from rain_search.backends.store import Block, KVStore


class KVPool:
    """Keys and values of ``slots`` rows over ``columns`` positions, every layer in one buffer.

    Positions left of a row's context are padding the attention mask hides;
    they are zeroed when the row is written, never left uninitialised (masked
    garbage could be NaN or infinite, which a zero weight does not cancel). The
    buffer itself is not zeroed: a position is written before it is read (a
    free slot attends only to the position its call appends).
    """

    def __init__(self, store: KVStore, slots: int, columns: int) -> None:
        layers, two, heads, head_dim = store.shape
        like = store.take([])
        self.data = like.new_empty(layers, two, slots, heads, columns, head_dim)

    @property
    def slots(self) -> int:
        return self.data.shape[2]

    @property
    def columns(self) -> int:
        return self.data.shape[4]

    def write(
        self, slots: Sequence[int], contexts: Sequence[Sequence[int]], end: int, store: KVStore
    ) -> None:
        """Each context (store positions) into its slot, its last position at column
        ``end - 1`` and zeros before it: one zeroing and one gather for every row."""
        index = self._index
        self.data[:, :, index(slots), :, :end] = 0
        rows = [slot for slot, context in zip(slots, contexts, strict=True) for _ in context]
        columns = [c for context in contexts for c in range(end - len(context), end)]
        positions = [p for context in contexts for p in context]
        if positions:
            self.data[:, :, index(rows), :, index(columns)] = store.take(positions)

    def capture(
        self, slots: Sequence[int], lengths: Sequence[int], end: int, store: KVStore
    ) -> list[Block]:
        """The last ``length`` positions before ``end`` of each slot, copied to new store
        blocks in one indexed copy; a block per slot."""
        blocks = store.allocate_many(lengths)
        rows = [slot for slot, length in zip(slots, lengths, strict=True) for _ in range(length)]
        columns = [c for length in lengths for c in range(end - length, end)]
        positions = [p for block in blocks for p in block.positions]
        index = self._index
        store.put(positions, self.data[:, :, index(rows), :, index(columns)])
        return blocks

    def take(self, rows: Sequence[int], start: int, stop: int) -> torch.Tensor:
        """A copy of slots ``rows`` over columns [start, stop): (layers, 2, rows, heads,
        stop - start, head_dim), never a view (it may be put back into this pool)."""
        return self.data[:, :, self._index(rows), :, start:stop]

    def put(self, rows: torch.Tensor, end: int) -> None:
        """Rows taken by :meth:`take` into slots 0.., ending at column ``end``, zeros before."""
        count, width = rows.shape[2], rows.shape[4]
        self.data[:, :, :count, :, : end - width] = 0
        self.data[:, :, :count, :, end - width : end] = rows

    def move(self, sources: Sequence[int], targets: Sequence[int], stop: int) -> None:
        """Copy slots ``sources`` into slots ``targets`` (columns up to ``stop``)."""
        index = self._index
        self.data[:, :, index(targets), :, :stop] = self.data[:, :, index(sources), :, :stop]

    def cache(self, rows: int, length: int) -> DynamicCache:
        """A cache over the first ``rows`` slots whose first ``length`` columns hold data."""
        return roomy_cache([(layer[0, :rows], layer[1, :rows]) for layer in self.data], length)

    def _index(self, rows: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(rows), dtype=torch.long, device=self.data.device)
