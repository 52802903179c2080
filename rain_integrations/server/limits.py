"""How much one server takes on: request limits and the gate in front of the searches.

A search is long (seconds to minutes), so the server admits a fixed number
at once and lets a bounded number wait; past that it answers 429 at once
rather than letting a queue grow without end. The searches admitted together
share the generator's engine: their leaves are decoded in the same forward
calls, so admitting several costs far less than running them one by one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rain_search.errors import ConfigError


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for, and how many searches run or wait at once.

    ``timeout`` caps each answer's wall-clock seconds, counted from when its
    search gets a slot (waiting in the queue is not charged). An answer the
    server's timeout cuts short is an error (504), not a truncated 200; a
    request that wants the answer so far sets ``rain.timeout`` itself (at
    most ``timeout``). ``max_wait`` is how long a request may wait in the
    queue for a slot before it is refused with a 503.

    The size limits are checked before any tokenising, so a huge request
    costs nothing: ``max_body_bytes`` (413 past it) and ``body_timeout`` (the
    seconds the body may take to arrive; 408 past it), ``max_messages``, and
    ``max_prompt_chars`` (the prompt's characters; default ``CHARS_PER_TOKEN``
    per allowed token, far more than ordinary text packs into a token).
    ``max_header_bytes`` (431 past it) and ``header_timeout`` (the seconds a
    request's head may take from its first byte; 408 past it) hold before the
    head is parsed, and so before the API key is checked; they apply where
    ``rain serve`` runs uvicorn itself (:mod:`~rain_integrations.server.protocol`).
    """

    max_prompt_tokens: int = 4096
    max_tokens: int = 512
    max_concurrent: int = 8
    max_queue: int = 8
    timeout: float | None = 300.0
    max_wait: float = 60.0
    max_messages: int = 256
    max_prompt_chars: int | None = None
    max_body_bytes: int = 1024 * 1024
    body_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_prompt_tokens", "max_tokens", "max_concurrent", "max_messages"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be 0 or more, got {self.max_queue}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout must be positive seconds or None, got {self.timeout}")
        for name in ("max_wait", "body_timeout", "header_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive seconds, got {getattr(self, name)}")
        for name in ("max_body_bytes", "max_header_bytes"):
            if getattr(self, name) < 1024:
                raise ConfigError(f"{name} must be at least 1024, got {getattr(self, name)}")
        if self.max_prompt_chars is not None and self.max_prompt_chars < 1:
            raise ConfigError(f"max_prompt_chars must be at least 1, got {self.max_prompt_chars}")

    @property
    def prompt_chars(self) -> int:
        """The most characters a prompt may have (checked before tokenising)."""
        if self.max_prompt_chars is not None:
            return self.max_prompt_chars
        return CHARS_PER_TOKEN * self.max_prompt_tokens


CHARS_PER_TOKEN = 16
"""Characters per allowed prompt token before a prompt is refused untokenised.

A rule of thumb puts English at about 4 characters a token; 16 leaves room for
code, long words and runs of spaces. ``max_prompt_chars`` sets another bound.
"""


class GateFull(Exception):
    """Every search slot is taken and the queue is full: the caller answers 429."""


class SearchGate:
    """At most ``slots`` searches run at once and at most ``queue`` more wait.

    ``on_change(running, waiting)`` hears every change of the counts (the metrics' gauges).

    :meth:`admit` decides at once (so a full server answers 429 before any
    work); the admitted request then waits for a slot with :meth:`Ticket.wait`
    (on the event loop), which gives up when the request is cancelled or has
    waited too long. Its search is built only once it has the slot, so its
    time budget starts there.
    """

    def __init__(
        self, slots: int, queue: int, on_change: Callable[[int, int], None] | None = None
    ) -> None:
        self.slots, self.queue = slots, queue
        self._free = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._on_change = on_change
        self.running = 0
        self.waiting = 0

    def _changed(self) -> None:
        """Tell ``on_change`` the new counts (called with the lock held: in order)."""
        if self._on_change is not None:
            self._on_change(self.running, self.waiting)

    def admit(self) -> Ticket:
        """A place in the queue; :class:`GateFull` when there is none."""
        with self._lock:
            if self.running + self.waiting >= self.slots + self.queue:
                raise GateFull(
                    f"the server is busy: {self.running} searches running and {self.waiting} "
                    "waiting; retry later"
                )
            self.waiting += 1
            self._changed()
        return Ticket(self)

    def _started(self) -> None:
        with self._lock:
            self.waiting -= 1
            self.running += 1
            self._changed()

    def _left_queue(self) -> None:
        with self._lock:
            self.waiting -= 1
            self._changed()

    def _finished(self) -> None:
        with self._lock:
            self.running -= 1
            self._changed()
        self._free.release()


class Ticket:
    """One admitted search's claim on the gate: wait for a slot, then release it once."""

    def __init__(self, gate: SearchGate) -> None:
        self._gate = gate
        self._state = "waiting"

    async def wait(
        self, gave_up: Callable[[], Awaitable[bool]], max_wait: float, poll: float = 0.05
    ) -> bool:
        """Wait for a slot (True), or until ``await gave_up()`` or ``max_wait`` s pass (False).

        Polls rather than blocks, so the event loop keeps serving while
        requests wait; a request that does not get its slot leaves the queue.
        """
        deadline = time.monotonic() + max_wait
        while not self._gate._free.acquire(blocking=False):
            if time.monotonic() >= deadline or await gave_up():
                self.release()
                return False
            await asyncio.sleep(poll)
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
