"""The slot decoder's key/value storage: fixed slots written in place.

Every row of the shared batch owns a slot: per layer, keys and values
(slots, heads, columns, head_dim), each row's context ending at the same
column so one forward call appends every row's next position in place.
A row that joins is written into a free slot; a row that leaves frees its
slot; the cache the model sees is a view of the first slots. Only when a
context does not fit (longer than the columns to the right edge, or no
column left for the next token) is the pool rebuilt, so a join costs a copy
of the joining rows, not of the whole batch (vLLM's fixed slots refilled as
work finishes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from rain_search.backends.kv import KV, roomy_cache


class KVPool:
    """Per layer (keys, values) buffers of ``slots`` rows and ``columns`` positions.

    Positions left of a row's context are padding the attention mask hides;
    they are zeroed when the row is written, never left uninitialised (masked
    garbage could be NaN or infinite, which a zero weight does not cancel). The
    buffers themselves are not zeroed: a position is written before it is read
    (a free slot attends only to the position its call appends), and zeroing
    a whole pool costs more than the copies it saves.
    """

    def __init__(self, like: KV, slots: int, columns: int) -> None:
        self.layers = [
            (
                keys.new_empty(slots, keys.shape[1], columns, keys.shape[3]),
                values.new_empty(slots, values.shape[1], columns, values.shape[3]),
            )
            for keys, values in like
        ]

    @property
    def slots(self) -> int:
        return self.layers[0][0].shape[0]

    @property
    def columns(self) -> int:
        return self.layers[0][0].shape[-2]

    def write(self, slots: Sequence[int], context: KV, end: int) -> None:
        """One context, (1, heads, tokens, head_dim) per layer, into each of ``slots``,
        its last position at column ``end - 1`` and zeros before it."""
        index = self._index(slots)
        for buffers, parts in zip(self.layers, context, strict=True):
            for buffer, part in zip(buffers, parts, strict=True):
                buffer[index, :, : end - part.shape[-2]] = 0
                buffer[index, :, end - part.shape[-2] : end] = part

    def take(self, rows: Sequence[int], start: int, stop: int) -> KV:
        """A copy of slots ``rows`` over columns [start, stop) (never a view: it may be
        put back into this pool)."""
        index = self._index(rows)
        return tuple(
            (keys[index, :, start:stop].clone(), values[index, :, start:stop].clone())
            if isinstance(index, slice)
            else (keys[index, :, start:stop], values[index, :, start:stop])
            for keys, values in self.layers
        )

    def put(self, rows: KV, end: int) -> None:
        """Rows taken by :meth:`take` into slots 0.., ending at column ``end``, zeros before."""
        for buffers, parts in zip(self.layers, rows, strict=True):
            for buffer, part in zip(buffers, parts, strict=True):
                count, width = part.shape[0], part.shape[-2]
                buffer[:count, :, : end - width] = 0
                buffer[:count, :, end - width : end] = part

    def move(self, sources: Sequence[int], targets: Sequence[int], stop: int) -> None:
        """Copy slots ``sources`` into slots ``targets`` (columns up to ``stop``)."""
        source, target = self._index(sources), self._index(targets)
        for buffers in self.layers:
            for buffer in buffers:
                buffer[target, :, :stop] = buffer[source, :, :stop]

    def cache(self, rows: int, length: int) -> DynamicCache:
        """A cache over the first ``rows`` slots whose first ``length`` columns hold data."""
        return roomy_cache([(keys[:rows], values[:rows]) for keys, values in self.layers], length)

    def _index(self, rows: Sequence[int]) -> torch.Tensor | slice:
        """``rows`` as a slice when they are consecutive (a plain copy, about twice as fast)."""
        rows = list(rows)
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return slice(rows[0], rows[0] + len(rows))
        return torch.tensor(rows, device=self.layers[0][0].device)
