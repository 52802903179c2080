"""The slot decoder's key/value storage: fixed slots written in place.

Every row of the shared batch owns a slot: one buffer (layers, 2, slots,
columns, heads, head_dim) holds every layer's keys and values, each row's
context ending at the same column so one forward call appends every row's
next position in place; the model sees, per layer, (rows, heads, columns,
head_dim) views of the first slots. Rows that join are written into free
slots with one gather from the :class:`~rain_search.backends.store.KVStore`
for all of them; the candidates of every expansion that finishes in a call
are copied out to the store with one indexed copy. Only when a context does
not fit (longer than the columns to the right edge, or no column left for the
next token) is the pool rebuilt (vLLM's fixed slots refilled as work finishes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from rain_search.backends.kv import roomy_cache
from rain_search.backends.store import Block, KVStore


class KVPool:
    """Keys and values of ``slots`` rows over ``columns`` positions, every layer in one buffer.

    Slot and column are neighbouring dimensions, so a (slot, column) pair is one
    index into a flat view and any set of positions of any rows moves with one
    ``index_select``/``index_copy_`` (in chunks of heads × head_dim). Positions
    left of a row's context are padding the attention mask hides: any finite
    value does (a zero weight cancels it, not a NaN), so they are zeroed when a
    row is written. The buffer itself is not: a column right of the edge is
    written before it is read, and zeroing a whole pool touches memory no row
    may ever use (peak memory of a CPU search: 396 MB against 231 MB).
    """

    def __init__(self, store: KVStore, slots: int, columns: int) -> None:
        layers, two, heads, head_dim = store.shape
        like = store.take([])
        self.data = like.new_empty(layers, two, slots, columns, heads, head_dim)

    @property
    def slots(self) -> int:
        return self.data.shape[2]

    @property
    def columns(self) -> int:
        return self.data.shape[3]

    def write(
        self, slots: Sequence[int], contexts: Sequence[Sequence[int]], end: int, store: KVStore
    ) -> None:
        """Each context (store positions) into its slot, its last position at column
        ``end - 1`` and zeros before it: one fill, one gather and one copy for every row."""
        padding = self._cells(slots, [range(end - len(context)) for context in contexts])
        if padding:
            self._flat().index_fill_(2, self._index(padding), 0)
        cells = self._cells(slots, [range(end - len(context), end) for context in contexts])
        positions = [p for context in contexts for p in context]
        if positions:
            self._flat().index_copy_(2, self._index(cells), store.take(positions))

    def capture(
        self, slots: Sequence[int], lengths: Sequence[int], end: int, store: KVStore
    ) -> list[Block]:
        """The last ``length`` positions before ``end`` of each slot, copied to new store
        blocks in one indexed copy; a block per slot."""
        blocks = store.allocate_many(lengths)
        cells = self._cells(slots, [range(end - length, end) for length in lengths])
        positions = [p for block in blocks for p in block.positions]
        store.put(positions, self._flat().index_select(2, self._index(cells)))
        return blocks

    def take(self, rows: Sequence[int], start: int, stop: int) -> torch.Tensor:
        """A copy of slots ``rows`` over columns [start, stop): (layers, 2, rows,
        stop - start, heads, head_dim), never a view (it may be put back into this pool)."""
        return self.data[:, :, self._index(rows), start:stop]

    def put(self, rows: torch.Tensor, end: int) -> None:
        """Rows taken by :meth:`take` into slots 0.., ending at column ``end``, zeros before."""
        count, width = rows.shape[2], rows.shape[3]
        self.data[:, :, :count, : end - width] = 0
        self.data[:, :, :count, end - width : end] = rows

    def move(self, sources: Sequence[int], targets: Sequence[int], stop: int) -> None:
        """Copy slots ``sources`` into slots ``targets`` (columns up to ``stop``)."""
        index = self._index
        self.data[:, :, index(targets), :stop] = self.data[:, :, index(sources), :stop]

    def cache(self, rows: int, length: int) -> DynamicCache:
        """A cache over the first ``rows`` slots whose first ``length`` columns hold data."""
        return roomy_cache(
            [
                (layer[0, :rows].transpose(1, 2), layer[1, :rows].transpose(1, 2))
                for layer in self.data
            ],
            length,
        )

    def _cells(self, slots: Sequence[int], spans: Sequence[range]) -> list[int]:
        """Indices into :meth:`_flat` of columns ``spans[i]`` of slot ``slots[i]``, in order."""
        columns = self.columns
        return [
            slot * columns + column
            for slot, span in zip(slots, spans, strict=True)
            for column in span
        ]

    def _flat(self) -> torch.Tensor:
        """(layers, 2, slots × columns, heads, head_dim): a view, one index per (slot, column)."""
        layers, two, slots, columns, heads, head_dim = self.data.shape
        return self.data.view(layers, two, slots * columns, heads, head_dim)

    def _index(self, rows: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(rows), dtype=torch.long, device=self.data.device)
