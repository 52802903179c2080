"""Key/value storage along the search tree: each node holds only its own tokens' cache.

A node's full context is the committed prefix's cache followed by the small
deltas along its path, so a token is never encoded twice. These helpers cut,
join and copy per-layer caches (the judge stores its keys and values this way;
the tree's nodes live in :mod:`~rain_search.backends.store`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from rain_search.errors import ModelLoadError

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per layer (keys, values), each shaped (batch, heads, tokens, head_dim)."""


def join_kv(parts: Sequence[KV]) -> KV:
    """Caches of consecutive positions, end to end."""
    if len(parts) == 1:
        return parts[0]
    layers = zip(*parts, strict=True)
    return tuple(
        (torch.cat([k for k, _ in layer], dim=-2), torch.cat([v for _, v in layer], dim=-2))
        for layer in layers
    )


def trim_kv(kv: KV, tokens: int) -> KV:
    """The first ``tokens`` positions of ``kv``."""
    return tuple((k[:, :, :tokens], v[:, :, :tokens]) for k, v in kv)


def make_cache(kv: KV, batch: int) -> DynamicCache:
    """A cache holding ``kv`` repeated ``batch`` times (views: no copy until extended)."""
    if not kv:
        return DynamicCache()
    return DynamicCache(
        ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv]
    )


def cache_rows(cache: DynamicCache, row: int, start: int, stop: int) -> KV:
    """Copy of one row's cache over token positions [start, stop)."""
    return tuple(
        (keys[row : row + 1, :, start:stop].clone(), values[row : row + 1, :, start:stop].clone())
        for keys, values in map(layer_tensors, cache.layers)
    )


class RoomyLayer(DynamicLayer):
    """A cache layer that appends into spare positions instead of copying itself.

    ``DynamicLayer`` concatenates on every call, so a batch's whole cache is
    copied once per decoded token and layer. This layer holds (batch, heads,
    room, head_dim) buffers; ``keys``/``values`` are views of the first
    ``length`` positions, and an append writes the new positions in place
    (the buffer doubles when it is full).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._room = (keys, values)
        self._length = length
        self._show()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + key_states.shape[-2]
        if end > self._room[0].shape[-2]:
            self._room = tuple(grow(part, 2 * end) for part in self._room)  # type: ignore[assignment]
        for part, new in zip(self._room, (key_states, value_states), strict=True):
            part[:, :, self._length : end] = new
        self._length = end
        self._show()
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def _show(self) -> None:
        self.keys = self._room[0][:, :, : self._length]
        self.values = self._room[1][:, :, : self._length]


def grow(room: torch.Tensor, size: int) -> torch.Tensor:
    """``room`` (batch, heads, tokens, dim) copied into a buffer of ``size`` positions."""
    bigger = room.new_zeros(room.shape[0], room.shape[1], size, room.shape[3])
    bigger[:, :, : room.shape[-2]] = room
    return bigger


def roomy_cache(rooms: Sequence[tuple[torch.Tensor, torch.Tensor]], length: int) -> DynamicCache:
    """A cache over per-layer (keys, values) buffers whose first ``length`` positions hold data."""
    cache = DynamicCache()
    cache.layers = [RoomyLayer(keys, values, length) for keys, values in rooms]
    return cache


def layer_tensors(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values; models whose cache has none cannot share a tree cache."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise ModelLoadError(
            f"this model's cache layers ({type(layer).__name__}) hold no key/value tensors, so "
            "the search cannot share them along its tree; use RainGenerator(..., kv_cache=False)"
        )
    return keys, values
