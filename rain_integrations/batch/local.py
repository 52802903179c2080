"""``rain batch`` in one process: rows searched together on the generator's engine, resumably.

Up to ``in_flight`` rows are searched at once. Each is opened as its own
stream (``stream(...).start()``, what :meth:`RainGenerator.generate_batch`
does for prompts that share one configuration; a row may bring its own
``system`` and ``rain`` settings), so the engine decodes their leaves in
shared forward calls. Each row is written the moment it finishes, so the
output is in finishing order (every line names its input ``line``) and a
killed job loses no finished row. The window bounds memory and work in
progress: a 100-row file never has more than ``in_flight`` live searches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from rain_integrations.batch.rows import (
    BadRow,
    OutputFolder,
    Row,
    check_source,
    error_record,
    read_rows,
    result_record,
)
from rain_search.errors import RainError
from rain_search.result import RainResult
from rain_search.search import RainGenerator, RainStream

IN_FLIGHT = 8
"""Rows searched at once by default: the server's default ``--max-concurrent`` too."""


@dataclass
class BatchSummary:
    """What one run did: rows answered and reported as errors now, and rows done before."""

    answered: int = 0
    errors: int = 0
    skipped: int = 0


def check_paths(source: Path, folder: Path) -> OutputFolder:
    """The input readable and the output writable, or a one-line ``ConfigError`` (no model yet)."""
    check_source(source)
    return OutputFolder(folder)


def run_local(
    generator: RainGenerator,
    source: Path,
    folder: Path,
    *,
    on_row: Callable[[int, BatchSummary], None] | None = None,
    in_flight: int = IN_FLIGHT,
) -> BatchSummary:
    """Answer every row of ``source`` not yet in ``folder``; a bad row is reported, not fatal.

    ``on_row(line, summary)`` is called after each row is written; if it
    raises (or the job is interrupted), the rows still in flight are cancelled
    and nothing of theirs is written, so a rerun does them again.
    """
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")
    out = check_paths(source, folder)
    done = out.done_lines()
    summary = BatchSummary()

    def written(row: Row | BadRow, record: dict, error: bool) -> None:
        out.write(record, error=error)
        if error:
            summary.errors += 1
        else:
            summary.answered += 1
        if on_row is not None:
            on_row(row.line, summary)

    running: dict[Future[RainResult], tuple[Row, RainStream]] = {}
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="rain-batch") as pool:
        try:
            for row in pending(read_rows(source), done, summary):
                if isinstance(row, BadRow):
                    written(row, error_record(row, row.error), True)
                    continue
                try:
                    stream = open_row(generator, row)
                except RainError as exc:  # this row's settings or prompt are wrong
                    written(row, error_record(row, str(exc)), True)
                    continue
                running[pool.submit(drain, stream)] = (row, stream)
                while len(running) >= in_flight:
                    finish_some(running, written)
            while running:
                finish_some(running, written)
        finally:
            for _, stream in running.values():  # interrupted: stop what is left
                stream.close()
    return summary


def pending(
    rows: Iterator[Row | BadRow], done: set[int], summary: BatchSummary
) -> Iterator[Row | BadRow]:
    """The rows not yet answered or reported (counting the others as skipped)."""
    for row in rows:
        if row.line in done:
            summary.skipped += 1
        else:
            yield row


def finish_some(
    running: dict[Future[RainResult], tuple[Row, RainStream]],
    written: Callable[[Row, dict, bool], None],
) -> None:
    """Wait for at least one row to finish, and write every finished one."""
    finished, _ = wait(running, return_when=FIRST_COMPLETED)
    for future in finished:
        row, _ = running.pop(future)
        try:
            record, error = result_record(row, future.result()), False
        except RainError as exc:  # this row's search failed: report it, go on
            record, error = error_record(row, str(exc)), True
        written(row, record, error)


def open_row(generator: RainGenerator, row: Row) -> RainStream:
    """The row's search with its own settings (message contents stay text), started."""
    config = row.config(generator.config)
    return generator.stream(row.prompt, system=row.system, config=config).start()


def drain(stream: RainStream) -> RainResult:
    """Run ``stream`` to its end (on a worker thread) and return its result."""
    for _ in stream:
        pass
    if stream.result is None:  # closed before it ended: the job was interrupted
        raise RuntimeError("the row's search was stopped before it finished")
    return stream.result


def answer(generator: RainGenerator, row: Row) -> RainResult:
    """One row's answer with its own settings, on the calling thread (Ray Data's actors)."""
    return drain(open_row(generator, row))
