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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from rain_search.backends.base import ExpandRequest, Expansion, Proposal
from rain_search.backends.kv import KV, NodeState, concat_kv, layer_tensors, trim_state
from rain_search.backends.proposals import (
    choose,
    distinct,
    first_tokens,
    rollout_ends,
    sample_top_k,
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
    result: Expansion | None = None

    @property
    def n_children(self) -> int:
        return len(self.greedy)

    @property
    def length(self) -> int:
        return self.request.length if self.n_children else 0


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
        self.rows: list[Row] = []
        self.cache = DynamicCache()
        self.width = 0  # cache positions per row, padding included
        self._joining: list[Row] = []
        self._live: list[int] = []  # positions in ``rows`` still decoding

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
        )
        job.tokens = [[] for _ in range(job.n_children + int(job.rollout))]
        job.token_log_probs = [[] for _ in range(job.n_children)]
        log_probs = leaf.next_log_probs.expand(len(job.tokens), -1)
        self._joining += [Row(job, index, 0, token) for index, token in self._draw(job, log_probs)]
        if not any(row.job is job for row in self._joining):
            self._finish(job)
        return job

    def cancel(self, job: Job) -> None:
        """Stop decoding ``job``: its rows leave at the next relayout."""
        self._joining = [row for row in self._joining if row.job is not job]
        self._live = [p for p in self._live if self.rows[p].job is not job]

    def step(self) -> list[Job]:
        """One forward call over every live row; the jobs it finished, in the order they began."""
        self._admit()
        if not self.rows:
            return []
        batch = len(self.rows)
        device = self.backend.device
        starts = torch.tensor([row.start for row in self.rows], device=device)
        positions = torch.arange(self.width + 1, device=device)
        mask = (positions[None, :] >= starts[:, None]).long()
        log_probs = self.backend.forward(
            torch.tensor([[row.token] for row in self.rows], device=device),
            self.cache,
            attention_mask=mask,
            position_ids=(self.width - starts)[:, None],
        )
        self.width += 1
        self._count(batch)
        return self._advance(log_probs)

    # -- one call's results ----------------------------------------------------------

    def _advance(self, log_probs: torch.Tensor) -> list[Job]:
        """Draw every row's next token; drop the rows that are done and finish their jobs."""
        by_job: dict[Job, list[int]] = {}
        for position in self._live:
            by_job.setdefault(self.rows[position].job, []).append(position)
        keep: list[int] = []
        finished: list[Job] = []
        for job, positions in by_job.items():
            job.step += 1
            rows = [self.rows[p] for p in positions]
            if job.step == job.length:
                self._capture(job, rows, positions, log_probs)
            drawn = dict(self._draw(job, log_probs[positions], [row.index for row in rows]))
            for position, row in zip(positions, rows, strict=True):
                if row.index in drawn:
                    row.token = drawn[row.index]
                    keep.append(position)
            if not any(row.index in drawn for row in rows):
                self._finish(job)
                finished.append(job)
        self._live = keep  # the rest leave at the next relayout, when the next rows join
        return finished

    def _draw(
        self, job: Job, log_probs: torch.Tensor, indices: Sequence[int] | None = None
    ) -> list[tuple[int, int]]:
        """Next tokens of the job's rows still running, as (row index, token).

        ``log_probs`` has one row per index in ``indices`` (default: all the
        job's rows). Candidates draw until the set is ``length`` long, the
        rollout until its end rule fires; both from the job's generator, in
        the order ``HFBackend.expand`` uses.
        """
        backend, request = self.backend, job.request
        indices = list(range(len(job.tokens))) if indices is None else list(indices)
        drawn: list[tuple[int, int]] = []
        children = [i for i in indices if i < job.n_children]
        if children and job.step < job.length:
            greedy = torch.tensor(job.greedy, device=backend.device, dtype=torch.bool)
            picks, picked = choose(
                log_probs[: job.n_children], job.first, greedy, request, job.step, job.generator
            )
            for row in range(job.n_children):
                job.tokens[row].append(int(picks[row]))
                job.token_log_probs[row].append(float(picked[row]))
                drawn.append((row, int(picks[row])))
        if job.rollout and job.n_children in indices:
            tokens = job.tokens[job.n_children]
            dist = log_probs[indices.index(job.n_children)][None]
            token = int(sample_top_k(dist, 0, request.rollout_temperature, job.generator)[0])
            tokens.append(token)
            if not rollout_ends(
                token, len(tokens), request, backend.eos_token_ids, backend.ends_clause
            ):
                drawn.append((job.n_children, token))
        return drawn

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

    def _count(self, batch: int) -> None:
        """Each search pays one call and its own rows (the backend counted the whole call)."""
        rows: dict[int, tuple[Counters, int]] = {}
        for row in self.rows:
            counters, count = rows.get(id(row.job.counters), (row.job.counters, 0))
            rows[id(counters)] = (counters, count + 1)
        for counters, count in rows.values():
            counters.count_forward(count, 1)

    # -- the shared cache --------------------------------------------------------------

    def _admit(self) -> None:
        """Drop the rows that are done and bring in the ones that joined: one relayout.

        With nobody joining, done rows leave only once they are a quarter of the
        batch: until then an idle row costs less than copying the cache.
        """
        dead = len(self.rows) - len(self._live)
        if self._joining or (dead and dead * 4 >= len(self.rows)) or not self._live:
            self._relayout(self._live, self._joining)
            self._joining = []

    def _relayout(self, keep: list[int], joining: list[Row]) -> None:
        """Rebuild the cache with rows ``keep`` and the ``joining`` rows' contexts.

        Every row's context ends at the right edge; padding on the left is
        trimmed to the longest context. One copy of the cache per change.
        """
        kept = [self.rows[i] for i in keep]
        rows = kept + joining
        if not rows:
            self.rows, self.width, self.cache, self._live = [], 0, DynamicCache(), []
            return
        trim = min((row.start for row in kept), default=self.width)
        old_width = self.width - trim
        width = max([old_width, *(context_length(row.job) for row in joining)])
        old = [layer_tensors(layer) for layer in self.cache.layers] if kept else []
        index = torch.tensor(keep, device=self.backend.device, dtype=torch.long)
        whole = len(keep) == len(self.rows)
        layers = []
        for layer in range(len(old) or len(joining[0].job.context)):
            pair = []
            for part in (0, 1):
                parts = []
                if kept:
                    rows_kept = old[layer][part] if whole else old[layer][part][index]
                    parts.append(pad_left(rows_kept[:, :, trim:], width))
                if joining:
                    parts.append(self._joining_block(joining, layer, part, width))
                pair.append(parts[0] if len(parts) == 1 else torch.cat(parts))
            layers.append((pair[0], pair[1]))
        for row in kept:
            row.start += width - old_width - trim
        for row in joining:
            row.start = width - context_length(row.job)
        self.rows, self.width = rows, width
        self._live = list(range(len(rows)))
        self._set_cache(layers)

    @staticmethod
    def _joining_block(joining: list[Row], layer: int, part: int, width: int) -> torch.Tensor:
        """The joining rows' contexts, right-aligned in ``width`` positions."""
        ref = joining[0].job.context[layer][part]
        block = ref.new_zeros(len(joining), ref.shape[1], width, ref.shape[3])
        for offset, row in enumerate(joining):
            context = row.job.context[layer][part][0]
            block[offset, :, width - context.shape[-2] :] = context
        return block

    def _set_cache(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not layers:
            self.cache = DynamicCache()
            return
        if not self.cache.layers or len(self.cache.layers) != len(layers):
            self.cache = DynamicCache(ddp_cache_data=layers)
            return
        for cache_layer, (keys, values) in zip(self.cache.layers, layers, strict=True):
            assert isinstance(cache_layer, DynamicLayer)  # what DynamicCache builds
            cache_layer.keys, cache_layer.values = keys, values


def context_length(job: Job) -> int:
    return job.context[0][0].shape[-2]


def pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """(batch, heads, tokens, dim) padded with zeros on the left to ``width`` tokens."""
    missing = width - tensor.shape[-2]
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0)) if missing else tensor
