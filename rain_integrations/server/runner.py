"""One search on its own thread, its committed steps handed to the event loop.

Every ``next()`` of a :class:`~rain_search.search.RainStream` runs on the one
thread made for its request (a search must start, run and end on the same
thread), and the event loop only awaits a queue, so it keeps serving other
requests. Cancelling the run (a client that went away) stops the search at
its next iteration. A run starts with its search slot already taken
(:meth:`Ticket.wait`), and gives it back when it ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from rain_integrations.server.limits import Ticket
from rain_search.errors import Cancelled
from rain_search.result import RainResult, StepStats
from rain_search.search import RainStream

Event = StepStats | RainResult | BaseException


class OutOfTime(Exception):
    """The run's deadline passed before its result came: it has been cancelled."""


class SearchRun:
    """A started search: :meth:`events` yields its steps, then its result (or its error).

    ``deadline`` (a :func:`time.monotonic` time) bounds how long :meth:`events`
    waits: past it the search is cancelled and :class:`OutOfTime` raised, so a
    step that would run on (a first step cannot stop half way) costs the
    client nothing. ``on_first_step`` and ``on_end`` are called on the
    search's own thread.
    """

    def __init__(
        self,
        stream: RainStream,
        ticket: Ticket,
        *,
        deadline: float | None = None,
        on_first_step: Callable[[], None] = lambda: None,
        on_end: Callable[[SearchRun], None] = lambda run: None,
    ) -> None:
        self._stream = stream
        self._ticket = ticket
        self._deadline = deadline
        self._on_first_step = on_first_step
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._cancel = threading.Event()
        self.ended = threading.Event()
        self.outcome = "running"  # then: completed, cancelled or failed
        self.out_of_time = False
        self.final: RainResult | None = None
        self.steps = 0
        self.committed_tokens = 0
        self._thread = threading.Thread(target=self._run, name="rain-request", daemon=True)
        self._thread.start()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop the search at its next iteration (or before it starts); safe from any thread."""
        self._cancel.set()
        self._stream.cancel()

    async def events(self, heartbeat: float | None = None) -> AsyncIterator[Event | None]:
        """Steps, then the result or the exception that ended the search.

        With ``heartbeat``, ``None`` is yielded after that many quiet seconds,
        so a streaming response can write something and notice a client that
        went away while a long step is searched.
        """
        while True:
            self._check_deadline()
            try:
                event = await asyncio.wait_for(self._queue.get(), self._wait(heartbeat))
            except asyncio.TimeoutError:
                self._check_deadline()
                yield None
                continue
            yield event
            if not isinstance(event, StepStats):
                return

    def _wait(self, heartbeat: float | None) -> float | None:
        """Seconds to wait for the next event: the heartbeat, or less near the deadline."""
        if self._deadline is None:
            return heartbeat
        left = max(self._deadline - time.monotonic(), 0.0)
        return left if heartbeat is None else min(heartbeat, left)

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.out_of_time = True
            self.cancel()
            raise OutOfTime

    async def result(
        self, disconnected: Callable[[], Awaitable[bool]], poll: float = 0.25
    ) -> RainResult:
        """The whole answer; cancels the search when ``await disconnected()`` turns true."""
        async for event in self.events(heartbeat=poll):
            if event is None and await disconnected():
                self.cancel()
            elif isinstance(event, RainResult):
                return event
            elif isinstance(event, BaseException):
                raise event
        raise Cancelled("the search ended without a result")

    def _run(self) -> None:
        try:
            for step in self._stream:
                if self.steps == 0:
                    self._on_first_step()
                self.steps += 1
                self.committed_tokens += len(step.token_ids)
                self._put(step)
            assert self._stream.result is not None  # set when the stream is exhausted
            self.final = self._stream.result
            self._put(self.final)
            self.outcome = "completed"
        except BaseException as exc:  # handed to the request, which reports it
            self.outcome = "cancelled" if self.cancelled else "failed"
            self._put(exc)
        finally:
            self._stream.close()  # on this thread, where the search ran
            self._ticket.release()
            self.ended.set()
            self._on_end(self)

    def _put(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel()
