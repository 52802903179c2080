"""Answering a whole prompt set offline: ``rain batch prompts.jsonl out/``."""

from __future__ import annotations

from rain_integrations.batch.local import BatchSummary, check_paths, run_local
from rain_integrations.batch.rows import OutputFolder, read_rows

__all__ = ["BatchSummary", "OutputFolder", "check_paths", "read_rows", "run_local"]
