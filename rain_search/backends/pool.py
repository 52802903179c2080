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

CHUNK_BYTES = 16 * 2**20
"""Most bytes :meth:`KVPool.write` and :meth:`KVPool.move` gather at once on a CPU. ``malloc``
serves an allocation above 32 MiB with fresh pages every time, each page a fault when
first written: gathering a 280-row join of the embedded model in one piece cost about
twice its copy (235-373 ms against 153 ms a write in 16 MiB pieces)."""


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
        ``end - 1`` and zeros before it, for every row at once.

        Rows given the same context object (an expansion's candidates and its
        rollout) read it from the store once: a gather of the distinct contexts,
        then one indexed copy that hands each to all its rows — against a gather
        per row, this moves about half the bytes at the ``fast`` preset's four rows
        per expansion (a joining batch of 280 rows: 318 ms against 146 ms here).
        Contexts go in groups by their number of rows, so no cell is written twice;
        the cells' indices are made on the device, a few operations per group. A
        shorter context of a group is gathered with filler on its left, zeroed in
        the pool with every row's padding (one fill), not in a padded copy first.
        """
        rows: dict[int, tuple[Sequence[int], list[int]]] = {}
        for slot, context in zip(slots, contexts, strict=True):
            rows.setdefault(id(context), (context, []))[1].append(slot)
        by_fan: dict[int, list[tuple[Sequence[int], list[int]]]] = {}
        for context, owners in rows.values():
            by_fan.setdefault(len(owners), []).append((context, owners))
        flat = self._flat()
        for fan, group in by_fan.items():
            width = max(len(context) for context, _ in group)
            targets = self._index([slot for _, owners in group for slot in owners])
            if width:  # (contexts, fan, width) cells, each context's rows in turn
                index = self._cells(targets, end - width, end).view(len(group), fan, width)
                step = self._rows_per_chunk(width)
                for first in range(0, len(group), step):
                    part = [context for context, _ in group[first : first + step]]
                    values = self._gathered(store, part, width)
                    flat[:, :, index[first : first + step]] = values[:, :, :, None]
            pads = [end - len(context) for context, owners in group for _ in owners]
            if any(pads):  # after the copy: it wrote filler left of shorter contexts
                pad_ends = targets * self.columns + torch.tensor(pads, device=targets.device)
                flat.index_fill_(2, right_aligned(pad_ends, pads), 0)

    @staticmethod
    def _gathered(store: KVStore, contexts: Sequence[Sequence[int]], width: int) -> torch.Tensor:
        """(layers, 2, contexts, width, heads, head_dim): each context's positions ending at
        the last column, in one gather; left of a shorter context, a copy of its first
        position (any stored position would do: :meth:`write` zeroes those cells)."""
        positions: list[int] = []
        for context in contexts:
            positions += [context[0] if context else 0] * (width - len(context))
            positions += context
        taken = store.take(positions)
        layers, two, _, heads, head_dim = taken.shape
        return taken.view(layers, two, len(contexts), width, heads, head_dim)

    def capture(
        self, slots: Sequence[int], lengths: Sequence[int], end: int, store: KVStore
    ) -> list[Block]:
        """The last ``length`` positions before ``end`` of each slot, copied to new store
        blocks in one indexed copy; a block per slot."""
        blocks = store.allocate_many(lengths)
        cells = right_aligned(self._index(slots) * self.columns + end, lengths)
        positions = [p for block in blocks for p in block.positions]
        store.put(positions, self._flat().index_select(2, cells))
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
        """Copy slots ``sources`` into slots ``targets`` (columns up to ``stop``), a few
        rows at a time (``CHUNK_BYTES``); no slot is both a source and a target."""
        index, step = self._index, self._rows_per_chunk(stop)
        for first in range(0, len(sources), step):
            rows = slice(first, first + step)
            self.data[:, :, index(targets[rows]), :stop] = self.data[
                :, :, index(sources[rows]), :stop
            ]

    def cache(self, rows: int, length: int) -> DynamicCache:
        """A cache over the first ``rows`` slots whose first ``length`` columns hold data."""
        return roomy_cache(
            [
                (layer[0, :rows].transpose(1, 2), layer[1, :rows].transpose(1, 2))
                for layer in self.data
            ],
            length,
        )

    def _cells(self, owners: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """(owners, stop - start): indices into :meth:`_flat` of columns [start, stop) of
        each slot in ``owners``."""
        columns = torch.arange(start, stop, device=owners.device)
        return owners[:, None] * self.columns + columns[None, :]

    def _rows_per_chunk(self, columns: int) -> int:
        """How many rows of ``columns`` positions (every layer's keys and values) fit
        ``CHUNK_BYTES``; at least one. Every row on a GPU: its caching allocator reuses
        freed blocks, and each piece would be two more kernel launches."""
        layers, two, slots, _, heads, head_dim = self.data.shape
        if self.data.device.type != "cpu":
            return max(slots, 1)
        row = max(columns, 1) * layers * two * heads * head_dim * self.data.element_size()
        return max(1, CHUNK_BYTES // row)

    def _flat(self) -> torch.Tensor:
        """(layers, 2, slots × columns, heads, head_dim): a view, one index per (slot, column)."""
        layers, two, slots, columns, heads, head_dim = self.data.shape
        return self.data.view(layers, two, slots * columns, heads, head_dim)

    def _index(self, rows: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(rows), dtype=torch.long, device=self.data.device)


def right_aligned(ends: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """The ``lengths[i]`` indices before ``ends[i]``, for every i, end to end: the cells
    of spans that end together, made on the device from one tensor of lengths."""
    counts = torch.tensor(list(lengths), dtype=torch.long, device=ends.device)
    total = int(sum(lengths))
    row_ends = torch.cumsum(counts, 0)
    # for cell j of span i: ends[i] - (row_ends[i] - j), j running over the whole output
    offsets = torch.repeat_interleave(ends - row_ends, counts, output_size=total)
    return offsets + torch.arange(total, device=ends.device)
