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

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # types only: a job with nothing left to answer never imports torch
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


RowCallback = Callable[[int, BatchSummary], None]
"""``on_row(line, summary)``: told after each row is written."""


@dataclass(frozen=True)
class Batch:
    """A job whose paths and earlier output are checked: the input, the output, what is done.

    Everything here is known before a model loads, so a job with nothing left to
    answer (or with a bad path or a damaged output file) never waits for one.
    """

    source: Path
    out: OutputFolder
    done: frozenset[int]
    repairs: tuple[str, ...] = ()

    def rows(self, summary: BatchSummary) -> Iterator[Row | BadRow]:
        """The rows not yet answered or reported (counting the others as skipped)."""
        for row in read_rows(self.source):
            if row.line in self.done:
                summary.skipped += 1
            else:
                yield row

    def needs_model(self) -> bool:
        """Whether a row is left to answer; bad rows are reported without a model."""
        return any(
            isinstance(row, Row) and row.line not in self.done for row in read_rows(self.source)
        )


def open_batch(source: Path, folder: Path) -> Batch:
    """The checked job, or a one-line ``ConfigError`` (no model yet).

    The input must be readable, the output folder writable and not the input's
    own folder files, and every line already in the output a record this job
    wrote (a last line cut short by a kill is repaired and reported).
    """
    check_source(source)
    out = OutputFolder(folder)
    out.check_apart(source)
    done, repairs = out.done_lines()
    return Batch(source, out, frozenset(done), tuple(repairs))


class Recorder:
    """Writes each finished row to the output folder, counts it, and tells ``on_row``."""

    def __init__(self, out: OutputFolder, on_row: RowCallback | None) -> None:
        self.out = out
        self.on_row = on_row
        self.summary = BatchSummary()

    def __call__(self, line: int, record: Mapping[str, Any], *, error: bool) -> None:
        self.out.write(record, error=error)
        if error:
            self.summary.errors += 1
        else:
            self.summary.answered += 1
        if self.on_row is not None:
            self.on_row(line, self.summary)

    def bad(self, row: BadRow) -> None:
        """Report a row that cannot be answered."""
        self(row.line, error_record(row, row.error), error=True)


def finish_without_model(batch: Batch, *, on_row: RowCallback | None = None) -> BatchSummary | None:
    """The job done without a model when no row is left to answer (bad rows are reported).

    ``None`` when a row still needs the model: the caller loads it and runs the job.
    """
    if batch.needs_model():
        return None
    record = Recorder(batch.out, on_row)
    for row in batch.rows(record.summary):
        if isinstance(row, BadRow):
            record.bad(row)
    return record.summary


def run_local(
    generator: RainGenerator,
    source: Path,
    folder: Path,
    *,
    on_row: RowCallback | None = None,
    in_flight: int = IN_FLIGHT,
) -> BatchSummary:
    """Answer every row of ``source`` not yet in ``folder``; a bad row is reported, not fatal.

    ``on_row(line, summary)`` is called after each row is written; if it
    raises (or the job is interrupted), the rows still in flight are cancelled
    and nothing of theirs is written, so a rerun does them again.
    """
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")
    batch = open_batch(source, folder)
    record = Recorder(batch.out, on_row)
    running: dict[Future[RainResult], tuple[Row, RainStream]] = {}
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="rain-batch") as pool:
        try:
            for row in batch.rows(record.summary):
                if isinstance(row, BadRow):
                    record.bad(row)
                    continue
                try:
                    stream = open_row(generator, row)
                except RainError as exc:  # this row's settings or prompt are wrong
                    record(row.line, error_record(row, str(exc)), error=True)
                    continue
                running[pool.submit(drain, stream)] = (row, stream)
                while len(running) >= in_flight:
                    finish_some(running, record)
            while running:
                finish_some(running, record)
        finally:
            for _, stream in running.values():  # interrupted: stop what is left
                stream.close()
    return record.summary


def finish_some(
    running: dict[Future[RainResult], tuple[Row, RainStream]], record: Recorder
) -> None:
    """Wait for at least one row to finish, and write every finished one."""
    finished, _ = wait(running, return_when=FIRST_COMPLETED)
    for future in finished:
        row, _ = running.pop(future)
        try:
            written, error = result_record(row, future.result()), False
        except RainError as exc:  # this row's search failed: report it, go on
            written, error = error_record(row, str(exc)), True
        record(row.line, written, error=error)


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
