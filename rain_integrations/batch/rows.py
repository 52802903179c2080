"""The rows of a batch job: reading prompts from JSON Lines, and writing answers resumably.

Each input line is one JSON object: ``prompt`` (text) or ``messages`` (chat),
optional ``id``, ``system`` and ``rain`` (a preset and RainConfig fields for
that row). A bad line is reported with its line number and the job goes on.

The output folder holds ``results.jsonl`` and ``errors.jsonl``; every row ends
in exactly one of them, written and flushed to disk as soon as it is done. A
job killed half way and started again reads both, repairs a line cut short
by the kill, and runs only the rows not yet written: none lost, none twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rain_search.config import RainConfig
from rain_search.errors import ConfigError, PromptError
from rain_search.untrusted import to_messages

if TYPE_CHECKING:
    from rain_search.result import RainResult

ROW_KEYS = frozenset({"id", "prompt", "messages", "system", "rain"})
RAIN_KEYS = frozenset(RainConfig.model_fields) | {"preset"}
RowId = str | int


@dataclass(frozen=True)
class Row:
    """One prompt to answer, where it came from, and its own settings."""

    line: int
    id: RowId
    prompt: str | list[dict[str, str]]
    system: str | None = None
    rain: dict[str, Any] = field(default_factory=dict)

    def config(self, base: RainConfig) -> RainConfig:
        """``base``, or the row's preset, with the row's RainConfig fields."""
        fields = dict(self.rain)
        preset = fields.pop("preset", None)
        start = base if preset is None else RainConfig.preset(str(preset))
        return start.merged(**fields) if fields else start


@dataclass(frozen=True)
class BadRow:
    """A line that cannot be answered, and why."""

    line: int
    id: RowId | None
    error: str


def read_rows(path: Path) -> Iterator[Row | BadRow]:
    """Every non-blank line of ``path`` as a :class:`Row` or a :class:`BadRow`."""
    seen: dict[RowId, int] = {}
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            row = parse_row(number, raw)
            if isinstance(row, Row) and row.id in seen:
                row = BadRow(number, row.id, f"id {row.id!r} repeats line {seen[row.id]}")
            elif isinstance(row, Row):
                seen[row.id] = number
            yield row


def parse_row(number: int, raw: bytes) -> Row | BadRow:
    """Line ``number`` as a row, or what is wrong with it."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return BadRow(number, None, f"not valid JSON in UTF-8: {exc}")
    if not isinstance(data, Mapping):
        return BadRow(number, None, f"a row must be a JSON object, got {type(data).__name__}")
    row_id = data.get("id", number)
    if not isinstance(row_id, str | int) or isinstance(row_id, bool):
        return BadRow(number, None, f"'id' must be a string or an integer, got {row_id!r}")
    try:
        return Row(number, row_id, *_checked(data))
    except (PromptError, ConfigError) as exc:
        return BadRow(number, row_id, str(exc))


def _checked(
    data: Mapping[str, Any],
) -> tuple[str | list[dict[str, str]], str | None, dict[str, Any]]:
    unknown = sorted(set(data) - ROW_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown}; a row has prompt or messages, and optionally id, "
            "system and rain (RAIN settings)"
        )
    if ("prompt" in data) == ("messages" in data):
        raise PromptError("a row needs exactly one of 'prompt' (text) or 'messages' (chat)")
    prompt = data["prompt"] if "prompt" in data else data["messages"]
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise PromptError(f"'system' must be a string, got {type(system).__name__}")
    to_messages(prompt, system)  # raises PromptError naming what is wrong
    rain = data.get("rain", {})
    if not isinstance(rain, Mapping):
        raise ConfigError(f"'rain' must be an object of RAIN settings, got {type(rain).__name__}")
    unknown = sorted(set(rain) - RAIN_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown RAIN setting(s) {unknown}; use preset and RainConfig fields such as "
            "max_new_tokens, seed, max_iterations"
        )
    Row(0, 0, "", rain=dict(rain)).config(RainConfig())  # check the values now
    return prompt, system, dict(rain)


def result_record(row: Row, result: RainResult) -> dict[str, Any]:
    """The output line of an answered row."""
    return {
        "id": row.id,
        "line": row.line,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "stats": result.stats,
        "warnings": list(result.warnings),
    }


def error_record(row: Row | BadRow, error: str) -> dict[str, Any]:
    return {"id": row.id, "line": row.line, "error": error}


def check_source(source: Path) -> None:
    """The input file can be read, or a :class:`ConfigError` saying why not."""
    if not source.exists():
        raise ConfigError(f"input file {str(source)!r} does not exist; give a .jsonl file")
    if not source.is_file():
        raise ConfigError(f"input {str(source)!r} is not a file; give a .jsonl file")
    try:
        with source.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read input file {str(source)!r}: {exc.strerror}") from exc


class OutputFolder:
    """``results.jsonl`` and ``errors.jsonl`` in one folder, appended one durable line at a time.

    Building it creates the folder and opens both files for appending, so an
    output path that cannot be written (under a regular file, a file where
    the folder should be, a ``results.jsonl`` that is a folder, no permission)
    is a one-line :class:`ConfigError` now, before any model is loaded.
    """

    def __init__(self, folder: Path) -> None:
        self.results = folder / "results.jsonl"
        self.errors = folder / "errors.jsonl"
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"output {str(folder)!r} is a file, not a folder; give a folder for "
                "results.jsonl and errors.jsonl"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the output folder {str(folder)!r}: {exc.strerror}; give a "
                "folder you can write to"
            ) from exc
        for path in (self.results, self.errors):
            try:
                with path.open("a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"cannot write {str(path)!r}: {exc.strerror}; move it away or give "
                    "another output folder"
                ) from exc

    def check_apart(self, source: Path) -> None:
        """``source`` is not this folder's own output: its records would be read as prompts.

        A :class:`ConfigError` now, not a ``KeyError`` after the model has loaded.
        """
        for path in (self.results, self.errors):
            if path.exists() and source.samefile(path):
                raise ConfigError(
                    f"the input {str(source)!r} is the output folder's own {path.name}; give "
                    "the prompts file as the input and another folder for the answers"
                )

    def done_lines(self) -> tuple[set[int], list[str]]:
        """Input lines already answered or reported, and what was repaired to read them.

        A last line cut short by a kill is dropped (its row is answered again) and
        reported; any other line that is not a record this job wrote is a
        :class:`ConfigError` naming the file and line, since resuming past it
        could answer a row twice or never.
        """
        done: set[int] = set()
        repairs: list[str] = []
        for path in (self.results, self.errors):
            dropped = repair(path)
            if dropped:
                repairs.append(
                    f"dropped the last line of {str(path)!r} ({dropped} bytes), cut short "
                    "by an earlier kill; its row is answered again"
                )
            if path.exists():
                with path.open("rb") as lines:
                    done.update(
                        record_line(path, number, raw)
                        for number, raw in enumerate(lines, start=1)
                        if raw.strip()
                    )
        return done, repairs

    def write(self, record: Mapping[str, Any], *, error: bool = False) -> None:
        """Append ``record`` and make sure it is on disk before the next row starts."""
        path = self.errors if error else self.results
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())


def repair(path: Path) -> int:
    """Drop a last line left without its newline (the job was killed while writing it).

    Returns how many bytes were dropped (0: nothing to repair).
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as out:
        out.truncate(keep)
    return len(data) - keep


def record_line(path: Path, number: int, raw: bytes) -> int:
    """The input line that line ``number`` of an output file records, or a ``ConfigError``."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON (column {exc.colno}: {exc.msg})"
    except UnicodeDecodeError as exc:
        problem = f"is not UTF-8 ({exc.reason} at byte {exc.start + 1})"
    else:
        line = record.get("line") if isinstance(record, dict) else None
        if isinstance(line, int) and not isinstance(line, bool) and line >= 1:
            return line
        problem = "names no input 'line'"
    raise ConfigError(
        f"line {number} of {str(path)!r} {problem}, so it is not a record rain batch wrote; "
        "delete or fix that line (its row is then answered again), or give another output folder"
    )
