"""Give back the calling thread's idle OpenMP workers.

torch's CPU kernels run their parallel regions on an OpenMP team that belongs to
the thread that started them, and GNU OpenMP keeps that team (one docked worker
per extra core) alive until its thread exits. Once it manages more threads than
there are cores, its workers spin only briefly between regions before they sleep
(libgomp's documented GOMP_SPINCOUNT throttling), so each of a forward call's
several hundred small regions waits for a wake-up. Measured on this project's
2-core machine: a 64-row decoding call of the embedded model took 225 ms on a
reader thread while the main thread's team existed, against 160 ms on the main
thread or on that reader once the main thread's team was given back. The engine
runs its turns on whichever reader waits, so a thread that stops running torch
work gives its team back; OpenMP builds a new one at the next region (one thread
start, microseconds).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

import torch

_SOFT = 1  # omp_pause_soft: free the threads, keep nothing else


def release_idle_workers() -> None:
    """Free this thread's OpenMP teams, if torch runs on GNU OpenMP (a no-op elsewhere)."""
    for pause in _pauses():
        pause(_SOFT)


@functools.cache
def _pauses() -> tuple[Callable[[int], int], ...]:
    """``omp_pause_resource_all`` of every libgomp in the process (torch's own, and a
    system one another library may have brought), found once.

    Only GNU OpenMP: LLVM's and Intel's runtimes keep one process-wide pool, which
    does not grow with the threads that use it.
    """
    if "OpenMP" not in torch.__config__.parallel_info():
        return ()
    found = []
    for path in _loaded_libgomps():
        try:
            function = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):  # an OpenMP older than 5.0
            continue
        function.argtypes = [ctypes.c_int]
        function.restype = ctypes.c_int
        found.append(function)
    return tuple(found)


def _loaded_libgomps() -> list[str]:
    """The paths of the libgomp copies mapped into this process (Linux; none elsewhere)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = [line[line.index("/") :].rstrip("\n") for line in maps if "/" in line]
    except OSError:
        return []
    return list(dict.fromkeys(p for p in paths if "libgomp" in p.rsplit("/", 1)[-1]))
