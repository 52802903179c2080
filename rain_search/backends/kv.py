"""Key/value storage along the search tree: each node holds only its own tokens' cache.

A node's full context is the committed prefix's cache followed by the small
deltas along its path, so a token is never encoded twice. These helpers cut,
join and copy those caches; the backend, the slot decoder and the judge all
store their keys and values this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from rain_search.errors import ModelLoadError

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per layer (keys, values), each shaped (batch, heads, tokens, head_dim)."""


@dataclass
class NodeState:
    """Cache of a node's own tokens and the log-probabilities of the next token."""

    kv: KV
    next_log_probs: torch.Tensor  # (vocab,), temperature 1


def concat_kv(states: Sequence[NodeState]) -> KV:
    """The full context of the last state: its ancestors' caches end to end."""
    if len(states) == 1:
        return states[0].kv
    layers = zip(*(state.kv for state in states), strict=True)
    return tuple(
        (torch.cat([k for k, _ in layer], dim=-2), torch.cat([v for _, v in layer], dim=-2))
        for layer in layers
    )


def trim_kv(kv: KV, tokens: int) -> KV:
    """The first ``tokens`` positions of ``kv``."""
    return tuple((k[:, :, :tokens], v[:, :, :tokens]) for k, v in kv)


def trim_state(state: NodeState, drop: int) -> NodeState:
    """``state`` without its last ``drop`` tokens (the next-token log-probs are kept)."""
    kept = state.kv[0][0].shape[-2] - drop
    return NodeState(trim_kv(state.kv, kept), state.next_log_probs)


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


def layer_tensors(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values; models whose cache has none cannot share a tree cache."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise ModelLoadError(
            f"this model's cache layers ({type(layer).__name__}) hold no key/value tensors, so "
            "the search cannot share them along its tree; use RainGenerator(..., kv_cache=False)"
        )
    return keys, values
