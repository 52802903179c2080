"""Handing freed heap memory back to the system after each search, so a server's RSS levels off.

A search allocates and frees many tensors of many sizes (key/value caches
that grow along the tree, rollouts, judge prompts). glibc's allocator keeps
freed memory for reuse, and after large frees it raises its own threshold
for serving big blocks from the heap, so a long-running process holds on to
memory it no longer uses and its RSS creeps up request after request. Asking
glibc to trim (``malloc_trim(0)``) when a search ends returns those free
pages; elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim_heap() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
