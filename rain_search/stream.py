"""The reader's handle on one generation: its committed steps as they come, then the result.

Above the engine: a stream hands its search to the generator's scheduler and
takes each committed step from the queue the engine fills, on whatever thread
(or event loop) reads it; the reader's thread runs the engine's calls while
it waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

from rain_search.engine import Scheduler, Task
from rain_search.result import RainResult, StepStats
from rain_search.work import Policy


class RainStream:
    """Committed steps of one generation as they happen; ``result`` at the end.

    Reading a step drives the generator's engine until the step is there (or
    waits while another reader drives it), so any thread may call ``next`` (a
    server's thread pool does) and several streams can be read at once.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        search: Policy,
        prompt_ids: Sequence[int],
        warnings: list[str],
    ) -> None:
        self._scheduler = scheduler
        self._search = search
        self._prompt_ids = list(prompt_ids)
        self._warnings = warnings
        self._cancel = threading.Event()
        search.cancelled = self._cancel.is_set
        self._task: Task | None = None
        self._ended = False
        self.result: RainResult | None = None

    def start(self) -> RainStream:
        """Hand the search to the engine now (the first ``next`` does it otherwise)."""
        if self._task is None:
            self._task = self._scheduler.submit(self._search, self._prompt_ids)
        return self

    def __iter__(self) -> RainStream:
        return self

    def __next__(self) -> StepStats:
        if self._ended:
            raise StopIteration
        self.start()
        assert self._task is not None
        item = self._scheduler.take(self._task)
        if isinstance(item, StepStats):
            return item
        self._ended = True
        if isinstance(item, BaseException):
            raise item
        self.result = self._search.result
        assert self.result is not None
        self.result.warnings.extend(self._warnings)
        raise StopIteration

    def finish(self) -> RainResult:
        """Read the remaining steps; the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def __aiter__(self) -> AsyncIterator[StepStats]:
        """Each step is awaited in a worker thread, so the event loop never blocks.

        Cancelling the consuming task (or leaving the loop) cancels the search,
        which stops before its next iteration and releases its caches.
        """
        loop = asyncio.get_running_loop()
        done = object()
        try:
            while isinstance(step := await loop.run_in_executor(None, next, self, done), StepStats):
                yield step
        finally:
            self.close()

    def cancel(self) -> None:
        """Stop the search before its next iteration (safe to call from any thread)."""
        self._cancel.set()

    def close(self) -> None:
        """Stop the search now; the engine drops it and its caches before its next call
        (a search still queued, at once)."""
        if not self._ended:
            self.cancel()
            self._ended = True
            if self._task is not None:
                self._scheduler.reader_left()
