"""A thread-safe LRU memo that computes a batch's missing values in one call.

The search asks for the same texts' embeddings and the same (prompt, response)
scores again and again, from the engine thread and from callers' threads. Both
the embedders and the evaluators keep what they computed here: each distinct
missing key is computed once, in one call for the whole batch (one forward
call, not one per text), and the lock is held across that call so two threads
never compute the same key twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Values by key, the least recently used forgotten beyond ``size`` entries."""

    def __init__(self, size: int) -> None:
        self._values: LRUCache[K, V] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def get_many(
        self,
        keys: Sequence[K],
        compute: Callable[[list[K]], Sequence[V]],
        *,
        on_lookup: Callable[[int, int], None] | None = None,
    ) -> list[V]:
        """The value of each key, the distinct missing ones from one ``compute(missing)``.

        ``compute`` returns one value per key it is given, in order.
        ``on_lookup(asked, missing)`` is told how many keys were asked for and how
        many were not kept; it runs under the lock, so a shared counter stays exact.
        """
        with self._lock:
            missing = list(dict.fromkeys(key for key in keys if key not in self._values))
            if on_lookup is not None:
                on_lookup(len(keys), len(missing))
            fresh = dict(zip(missing, compute(missing), strict=True)) if missing else {}
            for key, value in fresh.items():
                self._values[key] = value
            return [fresh[key] if key in fresh else self._values[key] for key in keys]

    def missing(self, keys: Sequence[K]) -> int:
        """How many of ``keys`` are not kept (what a :meth:`get_many` would compute)."""
        with self._lock:
            return sum(key not in self._values for key in keys)

    def clear(self) -> None:
        """Forget every value, e.g. so that a timed run starts cold."""
        with self._lock:
            self._values.clear()
