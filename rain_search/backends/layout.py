"""Which row sits in which slot of the pool, and where the right edge is.

Rows are padded to one cache length: each row's context ends at the right
edge (``width``), an attention mask hides the padding on its left, and
``position_ids`` give each row its true positions. A row that leaves frees
its slot; rows that join are written into free slots; rows already in the
pool move only when a joining context is longer than the columns left of the
edge, slots run out, or no column is left for the next token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from transformers import DynamicCache

from rain_search.backends.pool import KVPool
from rain_search.backends.store import KVStore

JobT = TypeVar("JobT")

SPARE = 64
"""Free columns a new pool has right of the edge: calls (one column each) before rows must move."""


@dataclass(eq=False)
class Row(Generic[JobT]):
    """One live row: a candidate or rollout of a job, and the token it feeds next."""

    job: JobT
    index: int  # the job's row: a candidate's number, or n_children for the rollout
    token: int  # what to feed next
    context: Sequence[int]  # store positions of its context (written when it joins)
    start: int = 0  # first cache column of its context


class SlotLayout(Generic[JobT]):
    """The pool's slots, the rows in them, and the shared right edge."""

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self.rows: list[Row[JobT] | None] = []  # by slot; None: free (computed, never read)
        self.pool: KVPool | None = None
        self.cache = DynamicCache()
        self.width = 0  # cache columns per row, padding included

    def admit(self, joining: Sequence[Row[JobT]]) -> None:
        """Write the ``joining`` rows into free slots (a slot whose row is None is free).

        Done rows at the end leave at once; holes in the middle are refilled by
        the next rows to join, or closed by moving the last rows into them once
        they are a quarter of the batch (until then an idle row costs less than
        the copies).
        """
        while self.rows and self.rows[-1] is None:
            self.rows.pop()
        if not self.rows and not joining:
            self.cache = DynamicCache()
            return
        if not self.rows:  # nothing to move: the right edge goes where the joining rows end
            self.width = max(len(row.context) for row in joining)
        if not self._fits(joining):
            self._relayout(joining)
        self._place(joining)
        free = [slot for slot, row in enumerate(self.rows) if row is None]
        if free and len(free) * 4 >= len(self.rows):
            self._close(free)
        assert self.pool is not None
        self.cache = self.pool.cache(len(self.rows), self.width)

    def inputs(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The call's (rows, 1) tokens, (rows, width + 1) attention mask and (rows, 1)
        positions; a free slot attends to its own new position only: finite, read by nobody."""
        starts = torch.tensor(
            [self.width if row is None else row.start for row in self.rows], device=device
        )
        columns = torch.arange(self.width + 1, device=device)
        mask = (columns[None, :] >= starts[:, None]).long()
        tokens = torch.tensor(
            [[0 if row is None else row.token] for row in self.rows], device=device
        )
        return tokens, mask, (self.width - starts)[:, None]

    def release(self) -> None:
        """Give the pool's memory back (no row is left)."""
        self.rows, self.width, self.pool, self.cache = [], 0, None, DynamicCache()

    def _fits(self, joining: Sequence[Row[JobT]]) -> bool:
        """Can the joining rows go into free slots without moving any other row?"""
        pool = self.pool
        if pool is None or self.width >= pool.columns:
            return False
        free = self.rows.count(None) + pool.slots - len(self.rows)
        return len(joining) <= free and all(len(row.context) <= self.width for row in joining)

    def _place(self, joining: Sequence[Row[JobT]]) -> None:
        """Write every joining row's context into a free slot, ending at the right edge."""
        free = iter([slot for slot, row in enumerate(self.rows) if row is None])
        slots = []
        for row in joining:
            slot = next(free, None)
            if slot is None:
                slot = len(self.rows)
                self.rows.append(row)
            else:
                self.rows[slot] = row
            row.start = self.width - len(row.context)
            slots.append(slot)
        if joining:
            assert self.pool is not None
            self.pool.write(slots, [row.context for row in joining], self.width, self.store)

    def _close(self, free: list[int]) -> None:
        """Move the last rows into the holes, so the batch is as short as its live rows."""
        assert self.pool is not None
        sources, targets = [], []
        for hole in free:
            while self.rows and self.rows[-1] is None:
                self.rows.pop()
            if hole >= len(self.rows):
                break
            sources.append(len(self.rows) - 1)
            targets.append(hole)
            self.rows[hole] = self.rows.pop()
        if sources:
            self.pool.move(sources, targets, self.width)

    def _relayout(self, joining: Sequence[Row[JobT]]) -> None:
        """Move the live rows to slots 0.. with the padding on their left trimmed, so the
        ``joining`` rows fit; a bigger pool only when the present one is too small.

        A new pool has twice the slots needed and ``SPARE`` free columns: its
        memory is only touched as rows use it, and reusing one pool (rather than
        allocating per change) keeps that memory warm — first touches of fresh
        memory cost several times the copy itself.
        """
        kept = [(slot, row) for slot, row in enumerate(self.rows) if row is not None]
        trim = min((row.start for _, row in kept), default=self.width)
        old_width = self.width - trim
        width = max([old_width, *(len(row.context) for row in joining)])
        pool, moved = self.pool, None
        if kept:
            assert pool is not None
            moved = pool.take([slot for slot, _ in kept], trim, self.width)
        slots = len(kept) + len(joining)
        if pool is None or pool.slots < slots or pool.columns <= width:
            pool = KVPool(self.store, 2 * slots, width + SPARE)
        if moved is not None:
            pool.put(moved, width)
        for _, row in kept:
            row.start += width - old_width - trim
        self.rows, self.width, self.pool = [row for _, row in kept], width, pool
