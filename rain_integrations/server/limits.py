"""How much one server takes on: request limits and the gate in front of the searches.

A search is long (seconds to minutes), so the server admits a fixed number
at once and lets a bounded number wait; past that it answers 429 at once
rather than letting a queue grow without end. The searches admitted together
share the generator's engine: their leaves are decoded in the same forward
calls, so admitting several costs far less than running them one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from rain_search.errors import ConfigError


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for, and how many searches run or wait at once.

    ``timeout`` caps each answer's wall-clock seconds through RAIN's own
    ``timeout`` budget (the answer so far is returned, flagged ``budget``); a
    request may ask for less, never more.
    """

    max_prompt_tokens: int = 4096
    max_tokens: int = 512
    max_concurrent: int = 8
    max_queue: int = 8
    timeout: float | None = 300.0

    def __post_init__(self) -> None:
        for name in ("max_prompt_tokens", "max_tokens", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be 0 or more, got {self.max_queue}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout must be positive seconds or None, got {self.timeout}")


class GateFull(Exception):
    """Every search slot is taken and the queue is full: the caller answers 429."""


class SearchGate:
    """At most ``slots`` searches run at once and at most ``queue`` more wait.

    :meth:`admit` decides at once (so a full server answers 429 before any
    work); the admitted search then waits for a slot on its own thread with
    :meth:`Ticket.wait`, which gives up when the request is cancelled.
    """

    def __init__(self, slots: int, queue: int) -> None:
        self.slots, self.queue = slots, queue
        self._free = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0

    def admit(self) -> Ticket:
        """A place in the queue; :class:`GateFull` when there is none."""
        with self._lock:
            if self.running + self.waiting >= self.slots + self.queue:
                raise GateFull(
                    f"the server is busy: {self.running} searches running and {self.waiting} "
                    "waiting; retry later"
                )
            self.waiting += 1
        return Ticket(self)

    def _started(self) -> None:
        with self._lock:
            self.waiting -= 1
            self.running += 1

    def _left_queue(self) -> None:
        with self._lock:
            self.waiting -= 1

    def _finished(self) -> None:
        with self._lock:
            self.running -= 1
        self._free.release()


class Ticket:
    """One admitted search's claim on the gate: wait for a slot, then release it once."""

    def __init__(self, gate: SearchGate) -> None:
        self._gate = gate
        self._state = "waiting"

    def wait(self, cancelled: Callable[[], bool], poll: float = 0.05) -> bool:
        """Block until a slot is free (True) or ``cancelled()`` turns true (False)."""
        while not self._gate._free.acquire(timeout=poll):
            if cancelled():
                self.release()
                return False
        self._gate._started()
        self._state = "running"
        return True

    def release(self) -> None:
        """Give the slot (or the queue place) back; later calls do nothing."""
        if self._state == "running":
            self._gate._finished()
        elif self._state == "waiting":
            self._gate._left_queue()
        self._state = "released"
