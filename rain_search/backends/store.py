"""Every tree node's keys and values, in one stacked tensor per model.

A node owns the cache of its own tokens only (its context is the committed
prefix followed by the nodes along its path). Storing those as tensors of
their own cost a copy per node per layer when captured (a clone per row,
layer, keys and values: 306k ``clone`` calls for 64 searches × 8 tokens on
a GPU) and a concatenation per layer whenever a context was assembled. Here
every token position of every node lives in one buffer, (capacity, layers, 2,
heads, head_dim) — (layers, 2, capacity, heads, head_dim) — so capturing the
candidates of every finished expansion of a call is one indexed copy, and
writing every joining row's context into the decoder's pool is one gather —
work per call, not per row (the paged KV of vLLM, with blocks of one position).

A node holds a :class:`Span` of a :class:`Block`: positions it owns, handed
back to the store when the last node referring to them is collected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from rain_search.backends.kv import KV, layer_tensors
from rain_search.errors import ModelLoadError

MIN_CAPACITY = 1024
"""Positions of a new store; it doubles when full."""


class KVStore:
    """Token positions' keys and values for every node of every search on one model.

    ``data`` is (layers, 2, capacity, heads, head_dim): one ``index_select`` or
    ``index_copy_`` along the positions reads or writes any set of them for
    every layer at once, in chunks of heads × head_dim.
    Positions are handed out from a free list and come back when their
    :class:`Block` is collected (on whatever thread drops it: a deque is safe).
    """

    def __init__(self) -> None:
        self.data: torch.Tensor | None = None  # shaped by the first cache stored
        self._free: list[int] = []
        self._returned: deque[int] = deque()

    @property
    def shape(self) -> tuple[int, ...]:
        """(layers, 2, heads, head_dim): one position's keys and values."""
        layers, two, _, heads, head_dim = self._data.shape
        return (layers, two, heads, head_dim)

    @property
    def _data(self) -> torch.Tensor:
        assert self.data is not None, "nothing was stored yet"
        return self.data

    @property
    def live(self) -> int:
        """Positions held by nodes."""
        size = 0 if self.data is None else self.data.shape[2]
        return size - len(self._free) - len(self._returned)

    def allocate(self, count: int) -> Block:
        """``count`` free positions (the store grows when it has too few)."""
        while self._returned:
            self._free.append(self._returned.popleft())
        if len(self._free) < count:
            self._grow(count - len(self._free))
        taken, self._free = self._free[-count:] if count else [], self._free[: -count or None]
        return Block(self, taken)

    def allocate_many(self, counts: Sequence[int]) -> list[Block]:
        """One block of each size in ``counts``, from one allocation."""
        taken = self.allocate(sum(counts)).detach()
        blocks, start = [], 0
        for count in counts:
            blocks.append(Block(self, taken[start : start + count]))
            start += count
        return blocks

    def put(self, positions: Sequence[int], values: torch.Tensor) -> None:
        """Write (layers, 2, len(positions), heads, head_dim) ``values`` at ``positions``."""
        self._data.index_copy_(2, self.index(positions), values)

    def take(self, positions: Sequence[int]) -> torch.Tensor:
        """(layers, 2, len(positions), heads, head_dim): a copy of those positions."""
        return self._data.index_select(2, self.index(positions))

    def store_rows(self, cache: DynamicCache, spans: Sequence[range]) -> list[Block]:
        """A block per row of a batched ``cache``, holding its columns ``spans[row]``: one
        stack and one indexed copy for every row."""
        layers = [layer_tensors(layer) for layer in cache.layers]
        stacked = torch.stack([part for layer in layers for part in layer])  # (L*2, B, H, T, D)
        parts, batch, heads, width, head_dim = stacked.shape
        self._fit(len(layers), heads, head_dim, stacked)
        flat = stacked.view(len(layers), 2, batch, heads, width, head_dim).transpose(3, 4)
        flat = flat.reshape(len(layers), 2, batch * width, heads, head_dim)
        cells = [row * width + column for row, span in enumerate(spans) for column in span]
        blocks = self.allocate_many([len(span) for span in spans])
        positions = [p for block in blocks for p in block.positions]
        self.put(positions, flat.index_select(2, self.index(cells)))
        return blocks

    def read(self, positions: Sequence[int]) -> KV:
        """The positions as per-layer (1, heads, tokens, head_dim) keys and values (for tests
        and tools: the decoder never needs them in this shape)."""
        values = self.take(positions).transpose(2, 3)  # (L, 2, H, T, D)
        return tuple((layer[0][None], layer[1][None]) for layer in values)

    def release(self) -> None:
        """Drop the buffer once no node holds a position (the engine is idle)."""
        if self.live == 0:
            self.data, self._free, self._returned = None, [], deque()

    def _fit(self, layers: int, heads: int, head_dim: int, like: torch.Tensor) -> None:
        """Shape the buffer for this model's caches (on the first one stored, and again
        when the model was moved or cast since: its caches' shape, dtype or device)."""
        data = self.data
        if (
            data is None
            or self.shape != (layers, 2, heads, head_dim)
            or (data.dtype, data.device) != (like.dtype, like.device)
        ):
            self._reset(like.new_zeros(layers, 2, 0, heads, head_dim))

    def _reset(self, empty: torch.Tensor) -> None:
        """A new, empty buffer (the first cache, or a model moved or cast since)."""
        if self.live:
            raise ModelLoadError(
                "the model was moved or cast (its key/value cache changed shape, dtype or "
                "device) while searches on it were running; finish or cancel them first, "
                "or build a new RainGenerator for the changed model"
            )
        self.data, self._free, self._returned = empty, [], deque()

    def index(self, positions: Sequence[int]) -> torch.Tensor:
        return torch.tensor(positions, dtype=torch.long, device=self._data.device)

    def _grow(self, needed: int) -> None:
        layers, two, old, heads, head_dim = self._data.shape
        capacity = max(MIN_CAPACITY, 2 * old, old + needed)
        bigger = self._data.new_empty(layers, two, capacity, heads, head_dim)  # written first
        bigger[:, :, :old] = self._data
        self.data = bigger
        self._free = list(range(capacity - 1, old - 1, -1)) + self._free


class Block:
    """Positions of the store one node (or the prompt) owns; returned when collected."""

    __slots__ = ("positions", "store")

    def __init__(self, store: KVStore, positions: list[int]) -> None:
        self.store = store
        self.positions = positions

    def detach(self) -> list[int]:
        """Give up the positions without returning them (another block takes them)."""
        positions, self.positions = self.positions, []
        return positions

    def __del__(self) -> None:
        self.store._returned.extend(self.positions)


@dataclass(frozen=True)
class Span:
    """The first ``length`` positions of a block: a node's own tokens (trimmed at EOS)."""

    block: Block
    length: int

    @property
    def positions(self) -> list[int]:
        return self.block.positions[: self.length]


Context = tuple[Span, ...]
"""A node's keys and values: spans of the store, in order (one for a node's own tokens;
the prompt's and every committed node's for a root)."""


def context_positions(context: Iterable[Span]) -> list[int]:
    """Every position of a context, in order."""
    return [position for span in context for position in span.positions]


def context_length(context: Iterable[Span]) -> int:
    return sum(span.length for span in context)


@dataclass
class NodeState:
    """Where a node's own tokens' keys and values are stored, and the next token's log-probs."""

    kv: Context
    next_log_probs: torch.Tensor  # (vocab,), temperature 1


def concat_kv(states: Sequence[NodeState]) -> Context:
    """The full context of the last state: its ancestors' spans end to end (no copy)."""
    return tuple(span for state in states for span in state.kv)


def trim_state(state: NodeState, drop: int) -> NodeState:
    """``state`` without its last ``drop`` tokens (the next-token log-probs are kept)."""
    *head, last = state.kv
    return NodeState((*head, Span(last.block, last.length - drop)), state.next_log_probs)
