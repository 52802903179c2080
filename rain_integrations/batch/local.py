"""``rain batch`` in one process: answer each row in turn, resumably."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rain_integrations.batch.rows import (
    BadRow,
    OutputFolder,
    Row,
    error_record,
    read_rows,
    result_record,
)
from rain_search.errors import ConfigError, RainError
from rain_search.result import RainResult
from rain_search.search import RainGenerator


@dataclass
class BatchSummary:
    """What one run did: rows answered and reported as errors now, and rows done before."""

    answered: int = 0
    errors: int = 0
    skipped: int = 0


def run_local(
    generator: RainGenerator,
    source: Path,
    folder: Path,
    *,
    on_row: Callable[[int, BatchSummary], None] | None = None,
) -> BatchSummary:
    """Answer every row of ``source`` not yet in ``folder``; a bad row is reported, not fatal.

    ``on_row(line, summary)`` is called after each row is written.
    """
    if not source.is_file():
        raise ConfigError(f"input file {str(source)!r} does not exist; give a .jsonl file")
    out = OutputFolder(folder)
    done = out.done_lines()
    summary = BatchSummary()
    for row in read_rows(source):
        if row.line in done:
            summary.skipped += 1
            continue
        if isinstance(row, BadRow):
            out.write(error_record(row, row.error), error=True)
            summary.errors += 1
        else:
            try:
                out.write(result_record(row, answer(generator, row)))
                summary.answered += 1
            except RainError as exc:  # this row's settings or its search failed
                out.write(error_record(row, str(exc)), error=True)
                summary.errors += 1
        if on_row is not None:
            on_row(row.line, summary)
    return summary


def answer(generator: RainGenerator, row: Row) -> RainResult:
    """One row's answer with its own settings (message contents stay text)."""
    config = row.config(generator.config)
    stream = generator.stream(row.prompt, system=row.system, config=config)
    for _ in stream:
        pass
    assert stream.result is not None  # set when the stream is exhausted
    return stream.result
