"""Answering a whole prompt set offline: ``rain batch prompts.jsonl out/``."""

from __future__ import annotations

from rain_integrations.batch.local import (
    Batch,
    BatchSummary,
    finish_without_model,
    open_batch,
    run_local,
)
from rain_integrations.batch.rows import OutputFolder, read_rows

__all__ = [
    "Batch",
    "BatchSummary",
    "OutputFolder",
    "finish_without_model",
    "open_batch",
    "read_rows",
    "run_local",
]
