"""Expansions from many leaves and many searches, advanced one token per forward call.

:meth:`HFBackend.expand` runs one leaf's candidate rows and rollout row to
the end on its own, so a search waits for each leaf in turn and a rollout's
tail runs one row at a time. Here every live row of every expansion shares a
forward call: rows are padded to one cache length (each row's context ends at
the right edge, an attention mask hides the padding, ``position_ids`` give
each row its true positions), a row leaves the batch the moment its set or
rollout is done, and a new expansion can join between any two calls. The
tokens each expansion proposes are drawn exactly as ``expand`` draws them,
from its own generator, so what a leaf gets does not depend on its neighbours.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import DynamicCache

from rain_search.backends.base import ExpandRequest, Expansion, Proposal
from rain_search.backends.kv import (
    KV,
    NodeState,
    concat_kv,
    layer_tensors,
    trim_state,
)
from rain_search.backends.pool import KVPool
from rain_search.backends.proposals import (
    Sampling,
    distinct,
    first_tokens,
    rollout_ends,
    sampling,
    uniforms,
)
from rain_search.stats import Counters


class CachedModel(Protocol):
    """What the decoder needs of its backend (:class:`~rain_search.backends.hf.HFBackend`)."""

    eos_token_ids: frozenset[int]

    @property
    def device(self) -> torch.device: ...

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: DynamicCache,
        *,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        """(batch, 1) tokens on rows padded to one cache length; (batch, vocab) log-probs.

        ``attention_mask`` (batch, cached + 1) hides each row's padding,
        ``position_ids`` (batch, 1) give its true position.
        """
        ...

    def ends_clause(self, token: int) -> bool: ...


@dataclass(eq=False)
class Job:
    """One leaf's expansion in flight: rows 0..C-1 are candidates, row C the rollout."""

    request: ExpandRequest
    generator: torch.Generator
    counters: Counters  # the search this work is for: its share of each call is counted there
    context: KV  # the leaf's full context, (1, heads, tokens, head_dim) per layer
    first: torch.Tensor | None
    greedy: list[bool]
    rollout: bool
    tokens: list[list[int]] = field(default_factory=list)
    token_log_probs: list[list[float]] = field(default_factory=list)
    states: dict[int, NodeState] = field(default_factory=dict)
    step: int = 0
    serial: int = 0  # the order jobs joined: finished jobs are returned in it, whatever their slots
    result: Expansion | None = None

    @property
    def n_children(self) -> int:
        return len(self.greedy)

    @property
    def length(self) -> int:
        return self.request.length if self.n_children else 0


@dataclass(eq=False)
class Part:
    """Rows of one job drawn from one kind of distribution in one call."""

    job: Job
    rollout: bool
    positions: list[int]  # rows of the call's log-probs, in the job's row order
    kind: tuple[int, float]  # (top_k, temperature) the rows are drawn with
    uniform: torch.Tensor  # (rows, 1) float64, what the job's generator gave them


def uniforms_for(
    rows: int, sampled: bool, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(rows, 1): the job's uniform numbers, or zeros for rows that draw nothing (fixed, greedy)."""
    if sampled:
        return uniforms((rows,), generator, device)
    return torch.zeros(rows, 1, dtype=torch.float64, device=device)


@dataclass
class Row:
    job: Job
    index: int  # the job's row: a candidate's number, or n_children for the rollout
    start: int  # first cache position of this row's context
    token: int  # what to feed next


class SlotDecoder:
    """The live rows of every expansion, and their one shared cache.

    ``add`` takes an expansion (its first tokens are drawn at once from the
    leaf's distribution), ``step`` runs one forward call over every live row
    and returns the expansions that finished with it.
    """

    def __init__(self, backend: CachedModel) -> None:
        self.backend = backend
        self.rows: list[Row | None] = []  # by slot; None: free (computed, never read)
        self.pool: KVPool | None = None
        self.cache = DynamicCache()
        self.width = 0  # cache positions per row, padding included
        self._joining: list[Row] = []
        self._live: list[int] = []  # positions in ``rows`` still decoding
        self._serials = itertools.count()

    @property
    def live(self) -> bool:
        return bool(self._live or self._joining)

    def add(
        self,
        path: Sequence[NodeState],
        request: ExpandRequest,
        generator: torch.Generator,
        counters: Counters,
    ) -> Job:
        """Start expanding the last node of ``path``; the job's ``result`` is set when done."""
        leaf = path[-1]
        first, greedy = first_tokens(leaf.next_log_probs, request)
        job = Job(
            request=request,
            generator=generator,
            counters=counters,
            context=concat_kv(path),
            first=first,
            greedy=greedy,
            rollout=request.rollout_tokens > 0,
            serial=next(self._serials),
        )
        job.tokens = [[] for _ in range(job.n_children + int(job.rollout))]
        job.token_log_probs = [[] for _ in range(job.n_children)]
        log_probs = leaf.next_log_probs.expand(len(job.tokens), -1)
        rows = {index: index for index in range(len(job.tokens))}
        drawn = self._draw([(job, rows)], log_probs)[job]
        self._joining += [Row(job, index, 0, token) for index, token in drawn]
        if not any(row.job is job for row in self._joining):
            self._finish(job)
        return job

    def cancel(self, job: Job) -> None:
        """Stop decoding ``job``: its slots are freed before the next call."""
        self._joining = [row for row in self._joining if row.job is not job]
        self._live = [p for p in self._live if self.row(p).job is not job]

    def step(self) -> list[Job]:
        """One forward call over every live row; the jobs it finished, in the order they began."""
        self._admit()
        if not self.rows:
            return []
        device = self.backend.device
        # a free slot attends to its own new position only: finite, and read by nobody
        starts = torch.tensor(
            [self.width if row is None else row.start for row in self.rows], device=device
        )
        positions = torch.arange(self.width + 1, device=device)
        mask = (positions[None, :] >= starts[:, None]).long()
        log_probs = self.backend.forward(
            torch.tensor([[0 if row is None else row.token] for row in self.rows], device=device),
            self.cache,
            attention_mask=mask,
            position_ids=(self.width - starts)[:, None],
        )
        self.width += 1
        self._count()
        return self._advance(log_probs)

    # -- one call's results ----------------------------------------------------------

    def _advance(self, log_probs: torch.Tensor) -> list[Job]:
        """Draw every row's next token; drop the rows that are done and finish their jobs."""
        by_job: dict[Job, list[int]] = {}
        for position in self._live:
            by_job.setdefault(self.row(position).job, []).append(position)
        for job, positions in by_job.items():
            job.step += 1
            if job.step == job.length:
                self._capture(job, [self.row(p) for p in positions], positions, log_probs)
        drawn = self._draw(
            [(job, {self.row(p).index: p for p in positions}) for job, positions in by_job.items()],
            log_probs,
        )
        keep: list[int] = []
        finished: list[Job] = []
        for job, positions in by_job.items():
            tokens = dict(drawn[job])
            for position in positions:
                row = self.row(position)
                if row.index in tokens:
                    row.token = tokens[row.index]
                    keep.append(position)
            if not tokens:
                self._finish(job)
                finished.append(job)
        self._live = keep  # the others' slots are freed before the next call
        return sorted(finished, key=lambda job: job.serial)

    def row(self, position: int) -> Row:
        """The row in slot ``position``, which must be live."""
        row = self.rows[position]
        assert row is not None
        return row

    def _draw(
        self, rows_of: list[tuple[Job, dict[int, int]]], log_probs: torch.Tensor
    ) -> dict[Job, list[tuple[int, int]]]:
        """Next tokens of every job's rows still running, as (row index, token) per job.

        ``rows_of`` maps each job's live rows (row index) to rows of
        ``log_probs``. Candidates draw until the set is ``length`` long, the
        rollout until its end rule fires, each from its job's generator in the
        order ``HFBackend.expand`` uses; rows drawn from the same kind of
        distribution are cut and inverted in one call whatever their job, which
        gives each row what drawing it alone would.
        """
        groups: dict[tuple[int, float], list[Part]] = {}
        for job, rows in rows_of:
            for part in self._parts(job, rows):
                groups.setdefault(part.kind, []).append(part)
        drawn: dict[Job, list[tuple[int, int]]] = {job: [] for job, _ in rows_of}
        for (top_k, temperature), parts in groups.items():
            index = torch.tensor([p for part in parts for p in part.positions])
            dist = sampling(log_probs[index.to(log_probs.device)], top_k, temperature)
            if temperature == 0.0:
                sampled = dist.most_likely()
            else:
                sampled = dist.invert(torch.cat([part.uniform for part in parts]))
            offset = 0
            for part in parts:
                share = slice(offset, offset + len(part.positions))
                offset = share.stop
                if part.rollout:
                    drawn[part.job] += self._rollout_token(part.job, int(sampled[share][0]))
                else:
                    drawn[part.job] += self._candidate_tokens(
                        part.job, dist.rows(share), sampled[share]
                    )
        return drawn

    def _parts(self, job: Job, rows: dict[int, int]) -> list[Part]:
        """What ``job`` draws this call: its candidates' rows, then its rollout's row."""
        request, device, parts = job.request, self.backend.device, []
        if job.step < job.length and 0 in rows:
            count = job.n_children
            fixed = job.step == 0 and job.first is not None
            sampled = not fixed and request.temperature != 0.0
            top_k = 0 if job.first is not None else request.top_k
            parts.append(
                Part(
                    job=job,
                    rollout=False,
                    positions=[rows[index] for index in range(count)],
                    kind=(top_k, request.temperature),
                    uniform=uniforms_for(count, sampled, job.generator, device),
                )
            )
        if job.rollout and job.n_children in rows:
            temperature = request.rollout_temperature
            parts.append(
                Part(
                    job=job,
                    rollout=True,
                    positions=[rows[job.n_children]],
                    kind=(0, temperature),
                    uniform=uniforms_for(1, temperature != 0.0, job.generator, device),
                )
            )
        return parts

    def _candidate_tokens(
        self, job: Job, dist: Sampling, sampled: torch.Tensor
    ) -> list[tuple[int, int]]:
        """Each candidate's next token (fixed, greedy or ``sampled``), kept with its log-prob."""
        if job.step == 0 and job.first is not None:
            picks = job.first
        else:
            greedy = torch.tensor(job.greedy, device=sampled.device, dtype=torch.bool)
            picks = torch.where(greedy, dist.most_likely(), sampled)
        picked = dist.log_prob(picks)
        out = []
        for row, (token, log_prob) in enumerate(zip(picks.tolist(), picked.tolist(), strict=True)):
            job.tokens[row].append(token)
            job.token_log_probs[row].append(log_prob)
            out.append((row, token))
        return out

    def _rollout_token(self, job: Job, token: int) -> list[tuple[int, int]]:
        """The rollout's next token; nothing when the rollout ends with it."""
        tokens = job.tokens[job.n_children]
        tokens.append(token)
        backend = self.backend
        if rollout_ends(
            token, len(tokens), job.request, backend.eos_token_ids, backend.ends_clause
        ):
            return []
        return [(job.n_children, token)]

    def _capture(
        self, job: Job, rows: list[Row], positions: list[int], log_probs: torch.Tensor
    ) -> None:
        """Candidates' own keys and values (the last ``length`` positions), next log-probs."""
        layers = [layer_tensors(layer) for layer in self.cache.layers]
        for position, row in zip(positions, rows, strict=True):
            if row.index < job.n_children:
                kv = tuple(
                    (
                        k[position : position + 1, :, -job.length :].clone(),
                        v[position : position + 1, :, -job.length :].clone(),
                    )
                    for k, v in layers
                )
                job.states[row.index] = NodeState(kv, log_probs[position])

    def _finish(self, job: Job) -> None:
        proposals = [
            Proposal(
                tuple(job.tokens[row]),
                tuple(job.token_log_probs[row]),
                job.greedy[row],
                job.states[row],
            )
            for row in range(job.n_children)
        ]
        rollout = tuple(job.tokens[-1]) if job.rollout else ()
        kept = distinct(proposals, job.request, self.backend.eos_token_ids, trim_state)
        job.result = Expansion(kept, rollout)

    def _count(self) -> None:
        """Each search pays one call and its own rows (the backend counted the whole call)."""
        rows: dict[int, tuple[Counters, int]] = {}
        for row in filter(None, self.rows):
            counters, count = rows.get(id(row.job.counters), (row.job.counters, 0))
            rows[id(counters)] = (counters, count + 1)
        for counters, count in rows.values():
            counters.count_forward(count, 1)

    # -- the shared cache --------------------------------------------------------------

    def _admit(self) -> None:
        """Free the slots of rows that are done and write the joining rows into free slots.

        Rows already in the pool move only when a joining context is longer
        than the columns left of the right edge, slots run out, or no column is
        left for the next token. Done rows at the end leave at once; holes in the
        middle are refilled by the next rows to join, or closed by moving the
        last rows into them once they are a quarter of the batch (until then an
        idle row costs less than the copies).
        """
        live = set(self._live)
        self.rows = [row if p in live else None for p, row in enumerate(self.rows)]
        while self.rows and self.rows[-1] is None:
            self.rows.pop()
        joining, self._joining = self._joining, []
        if not self.rows and not joining:
            self._live, self.cache = [], DynamicCache()
            return
        if not self.rows:  # nothing to move: the right edge goes where the joining rows end
            self.width = max((context_length(row.job) for row in joining), default=0)
        if not self._fits(joining):
            self._relayout(joining)
        self._place(joining)
        free = [p for p, row in enumerate(self.rows) if row is None]
        if free and len(free) * 4 >= len(self.rows):
            self._close(free)
        self._live = [p for p, row in enumerate(self.rows) if row is not None]
        if self.pool is not None:
            self.cache = self.pool.cache(len(self.rows), self.width)

    def release(self) -> None:
        """Give the pool's memory back (the engine calls this when no search is left)."""
        if not self.live:
            self.rows, self.width, self.pool, self.cache = [], 0, None, DynamicCache()

    def _fits(self, joining: list[Row]) -> bool:
        """Can the joining rows go into free slots without moving any other row?"""
        pool = self.pool
        if pool is None or self.width >= pool.columns:
            return False
        free = self.rows.count(None) + pool.slots - len(self.rows)
        return len(joining) <= free and all(
            context_length(row.job) <= self.width for row in joining
        )

    def _place(self, joining: list[Row]) -> None:
        """Write each joining job's context into free slots, ending at the right edge."""
        free = iter([p for p, row in enumerate(self.rows) if row is None])
        slots: dict[Job, list[int]] = {}
        for row in joining:
            slot = next(free, None)
            if slot is None:
                slot = len(self.rows)
                self.rows.append(row)
            else:
                self.rows[slot] = row
            row.start = self.width - context_length(row.job)
            slots.setdefault(row.job, []).append(slot)
        for job, taken in slots.items():
            assert self.pool is not None
            self.pool.write(taken, job.context, self.width)

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

    def _relayout(self, joining: list[Row]) -> None:
        """Move the live rows to slots 0.. with the padding on their left trimmed, so the
        ``joining`` rows fit; a bigger pool only when the present one is too small.

        A new pool has twice the slots needed and ``SPARE`` free columns: its
        memory is only touched as rows use it, and reusing one pool (rather than
        allocating per change) keeps that memory warm — first touches of fresh
        memory cost several times the copy itself here.
        """
        kept = [(p, row) for p, row in enumerate(self.rows) if row is not None]
        trim = min((row.start for _, row in kept), default=self.width)
        old_width = self.width - trim
        width = max([old_width, *(context_length(row.job) for row in joining)])
        pool, moved = self.pool, None
        if kept:
            assert pool is not None
            moved = pool.take([p for p, _ in kept], trim, self.width)
        slots = len(kept) + len(joining)
        if pool is None or pool.slots < slots or pool.columns <= width:
            like = tuple(pool.layers) if pool is not None else joining[0].job.context
            pool = KVPool(like, 2 * slots, width + SPARE)
        if moved is not None:
            pool.put(moved, width)
        for _, row in kept:
            row.start += width - old_width - trim
        self.rows, self.width, self.pool = [row for _, row in kept], width, pool


SPARE = 64
"""Free columns a new pool has right of the edge: calls (one column each) before rows must move."""


def context_length(job: Job) -> int:
    return job.context[0][0].shape[-2]
