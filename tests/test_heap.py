"""Freezing the heap a server has loaded collects the garbage first (none is kept)."""

from __future__ import annotations

import gc
import weakref

from rain_search.heap import freeze_loaded_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_garbage_is_collected_before_the_heap_is_frozen() -> None:
    kept, dropped = Node(), Node()
    gone = weakref.ref(dropped)
    del dropped
    gc.disable()  # no automatic pass may collect the cycle before the call does
    try:
        freeze_loaded_heap()
        assert gone() is None
        assert gc.get_freeze_count() > 0
        assert kept.me is kept
    finally:
        gc.unfreeze()
        gc.enable()
