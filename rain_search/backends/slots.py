"""Expansions from many leaves and many searches, advanced one token per forward call.

Every live row of every expansion shares a forward call (a candidate set's
rows and its rollout row, from any leaf of any search); a row leaves the
batch the moment its set or rollout is done, and a new expansion can join
between any two calls (:class:`~rain_search.backends.layout.SlotLayout`
keeps the slots). Each call is worked on once for all rows, not per row: the
rows' tokens are drawn in one pass per kind of distribution with one host
copy (:mod:`~rain_search.backends.draws`); the candidates of every expansion
that ends with the call are copied out to the store in one indexed copy; the
contexts of every joining expansion are written in with one gather.

The tokens each expansion proposes are drawn exactly as one expansion alone
draws them, from its own generator's numbers in the same order, so what a leaf
gets does not depend on its neighbours.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import DynamicCache

from rain_search.backends.base import ExpandRequest, Expansion, Proposal
from rain_search.backends.draws import DrawPlan
from rain_search.backends.layout import Row, SlotLayout
from rain_search.backends.proposals import (
    distinct,
    rollout_ends,
    sampled_rows,
    top_picks,
    top_ranks,
)
from rain_search.backends.store import (
    Context,
    KVStore,
    NodeState,
    Span,
    concat_kv,
    context_positions,
    trim_state,
)
from rain_search.stats import Counters


class CachedModel(Protocol):
    """What the decoder needs of its backend (:class:`~rain_search.backends.hf.HFBackend`)."""

    eos_token_ids: frozenset[int]
    store: KVStore

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
    leaf: NodeState
    context: Context  # the leaf's full context, as store spans
    serial: int  # the order jobs joined: finished jobs are returned in it, whatever their slots
    first: list[int] | None = None  # ``top`` mode's fixed first tokens
    greedy: list[bool] = field(default_factory=list)
    uniforms: list[float] = field(default_factory=list)  # its generator's numbers, in order
    drawn: int = 0  # uniforms used so far
    tokens: list[list[int]] = field(default_factory=list)
    token_log_probs: list[list[float]] = field(default_factory=list)
    states: dict[int, NodeState] = field(default_factory=dict)
    calls: int = 0  # forward calls its rows have been through
    result: Expansion | None = None

    @property
    def n_children(self) -> int:
        return len(self.greedy)

    @property
    def length(self) -> int:
        return self.request.length if self.n_children else 0

    @property
    def rollout(self) -> bool:
        return self.request.rollout_tokens > 0

    def take_uniforms(self, count: int) -> list[float]:
        """Its generator's next ``count`` numbers (drawn ahead: see :meth:`draw_uniforms`)."""
        start, self.drawn = self.drawn, self.drawn + count
        numbers = self.uniforms[start : self.drawn]
        assert len(numbers) == count, "a job drew more numbers than it drew ahead"
        return numbers

    def draw_uniforms(self) -> None:
        """Every number the job can use, in the order it uses them, in one call.

        Per call the candidates draw (``n_children`` numbers, while the set is
        shorter than ``length``, unless fixed or at temperature 0), then the
        rollout (one, at a non-zero temperature). On a CPU generator numbers
        drawn at once are the ones drawn in turn, so this is what drawing per
        call gives; the numbers past what the job uses are never read.
        """
        request = self.request
        sampled_calls = self.length - (self.first is not None) if request.temperature else 0
        count = self.n_children * max(sampled_calls, 0)
        count += request.rollout_tokens if request.rollout_temperature else 0
        if count:
            device = self.generator.device
            numbers = torch.rand(
                count, generator=self.generator, dtype=torch.float64, device=device
            )
            self.uniforms = numbers.tolist()


class SlotDecoder:
    """The live rows of every expansion, and their one shared cache.

    ``add`` takes an expansion; ``call`` draws the first tokens of the ones
    added since the last call (from their leaves' distributions), runs one
    forward call over every live row and returns the expansions that finished.
    """

    def __init__(self, backend: CachedModel) -> None:
        self.backend = backend
        self.layout: SlotLayout[Job] = SlotLayout(backend.store)
        self._pending: list[Job] = []
        self._serials = itertools.count()

    @property
    def live(self) -> bool:
        return self._pending != [] or any(row is not None for row in reversed(self.layout.rows))

    def add(
        self,
        path: Sequence[NodeState],
        request: ExpandRequest,
        generator: torch.Generator,
        counters: Counters,
    ) -> Job:
        """Start expanding the last node of ``path``; the job's ``result`` is set when done."""
        job = Job(
            request=request,
            generator=generator,
            counters=counters,
            leaf=path[-1],
            context=concat_kv(path),
            serial=next(self._serials),
        )
        self._pending.append(job)
        return job

    def cancel(self, job: object) -> None:
        """Stop decoding ``job``: its slots are freed before the next call."""
        self._pending = [pending for pending in self._pending if pending is not job]
        rows = self.layout.rows
        self.layout.rows = [None if row is not None and row.job is job else row for row in rows]

    def call(self) -> list[Job]:
        """One forward call over every live row; the jobs it finished, in the order they began."""
        joining, finished = self._join()
        layout = self.layout
        layout.admit(joining)
        if layout.rows:
            tokens, mask, positions = layout.inputs(self.backend.device)
            log_probs = self.backend.forward(
                tokens, layout.cache, attention_mask=mask, position_ids=positions
            )
            layout.width += 1
            self._count()
            finished += self._advance(log_probs)
        return sorted(finished, key=lambda job: job.serial)

    def release(self) -> None:
        """Give the pool's and the store's memory back (the engine is idle)."""
        if not self.live:
            self.layout.release()
            self.backend.store.release()

    # -- drawing -------------------------------------------------------------------------

    def _join(self) -> tuple[list[Row[Job]], list[Job]]:
        """First tokens of the jobs added since the last call, drawn from their leaves."""
        jobs, self._pending = self._pending, []
        if not jobs:
            return [], []
        leaves = torch.stack([job.leaf.next_log_probs for job in jobs])  # (jobs, vocab)
        self._first_tokens(jobs, leaves)
        plan: DrawPlan[tuple[Job, int]] = DrawPlan()
        for number, job in enumerate(jobs):
            job.draw_uniforms()
            job.tokens = [[] for _ in range(job.n_children + int(job.rollout))]
            job.token_log_probs = [[] for _ in range(job.n_children)]
            self._plan(plan, job, dict.fromkeys(range(job.n_children + 1), number))
        joining, finished = [], []
        positions = {job: context_positions(job.context) for job in jobs}
        for (job, index), token, log_prob in plan.draw(leaves):
            if self._take(job, index, token, log_prob):
                joining.append(Row(job, index, token, positions[job]))
        going = {id(row.job) for row in joining}  # a set: rows x jobs comparisons were quadratic
        for job in jobs:
            if id(job) not in going:
                self._finish(job)
                finished.append(job)
        return joining, finished

    def _first_tokens(self, jobs: list[Job], leaves: torch.Tensor) -> None:
        """``top`` mode's fixed first tokens (one top-k per cut size), and greedy rows."""
        by_size: dict[int, list[int]] = {}
        for number, job in enumerate(jobs):
            if job.request.mode == "top":
                by_size.setdefault(top_ranks(job.request, leaves.shape[-1]), []).append(number)
            else:
                job.greedy = sampled_rows(job.request)
        for size, numbers in by_size.items():
            index = torch.tensor(numbers, device=leaves.device)
            ranked = leaves[index].topk(size).indices.tolist()
            for number, ids in zip(numbers, ranked, strict=True):
                job = jobs[number]
                job.first = top_picks(ids, job.request)
                job.greedy = [False] * len(job.first)

    def _plan(self, plan: DrawPlan[tuple[Job, int]], job: Job, slots: dict[int, int]) -> None:
        """The job's rows that draw at its next call (their log-probs rows in ``slots``):
        the candidates while the set is shorter than its length, then the rollout, each
        taking its uniform numbers in turn."""
        request, count = job.request, job.n_children
        if job.calls < job.length:
            fixed = job.first if job.calls == 0 else None
            sampled = fixed is None and request.temperature != 0.0
            plan.add(
                (0 if job.first is not None else request.top_k, request.temperature),
                [(job, index) for index in range(count)],
                [slots[index] for index in range(count)],
                uniforms=job.take_uniforms(count) if sampled else None,
                greedy=job.greedy,
                fixed=fixed,
            )
        rollout = slots.get(count)
        if job.rollout and rollout is not None:
            temperature = request.rollout_temperature
            uniforms = job.take_uniforms(1) if temperature else None
            plan.add((0, temperature), [(job, count)], [rollout], uniforms=uniforms)

    def _take(self, job: Job, index: int, token: int, log_prob: float) -> bool:
        """Record a drawn token; does the row go on (False: its rollout ended with it)?"""
        job.tokens[index].append(token)
        if index < job.n_children:
            job.token_log_probs[index].append(log_prob)
            return True
        backend = self.backend
        return not rollout_ends(
            token, len(job.tokens[index]), job.request, backend.eos_token_ids, backend.ends_clause
        )

    # -- one call's results ------------------------------------------------------------

    def _advance(self, log_probs: torch.Tensor) -> list[Job]:
        """Capture the sets that are complete, draw every row's next token, finish jobs."""
        rows = self.layout.rows
        by_job: dict[Job, dict[int, int]] = {}
        for slot, row in enumerate(rows):
            if row is not None:
                by_job.setdefault(row.job, {})[row.index] = slot
        for job in by_job:
            job.calls += 1
        self._capture([job for job in by_job if job.calls == job.length], by_job, log_probs)
        plan: DrawPlan[tuple[Job, int]] = DrawPlan()
        for job, slots in by_job.items():
            self._plan(plan, job, slots)
        going: set[int] = set()
        for (job, index), token, log_prob in plan.draw(log_probs):
            if self._take(job, index, token, log_prob):
                slot = by_job[job][index]
                row = rows[slot]
                assert row is not None
                row.token = token
                going.add(slot)
        self.layout.rows = [row if slot in going else None for slot, row in enumerate(rows)]
        finished = [job for job, slots in by_job.items() if not going.intersection(slots.values())]
        for job in finished:
            self._finish(job)
        return finished

    def _capture(
        self, jobs: list[Job], by_job: dict[Job, dict[int, int]], log_probs: torch.Tensor
    ) -> None:
        """Candidates' own keys and values (their last ``length`` columns) into the store,
        and their next log-probs, for every job whose sets are complete: one copy each."""
        owners = [
            (job, index, by_job[job][index]) for job in jobs for index in range(job.n_children)
        ]
        if not owners:
            return
        slots = [slot for _, _, slot in owners]
        lengths = [job.length for job, _, _ in owners]
        pool = self.layout.pool
        assert pool is not None
        blocks = pool.capture(slots, lengths, self.layout.width, self.backend.store)
        rows = torch.tensor(slots, device=log_probs.device)
        nexts = log_probs[rows].unbind()  # a copy of these rows only: the call's stays unkept
        for (job, index, _), block, length, after in zip(
            owners, blocks, lengths, nexts, strict=True
        ):
            job.states[index] = NodeState((Span(block, length),), after)

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
        for row in filter(None, self.layout.rows):
            counters, count = rows.get(id(row.job.counters), (row.job.counters, 0))
            rows[id(counters)] = (counters, count + 1)
        for counters, count in rows.values():
            counters.count_forward(count, 1)
