"""``rain batch --ray``: the rows as a Ray Data pipeline over a pool of model-holding actors.

Each actor builds its generator once (``map_batches`` with a callable class
and ``compute=ActorPoolStrategy``) and answers rows one at a time; the
driver writes each answer to the output folder as it arrives, exactly as the
in-process job does, so a killed job resumes the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rain_integrations.batch.local import (
    BatchSummary,
    Recorder,
    RowCallback,
    answer,
    open_batch,
)
from rain_integrations.batch.rows import BadRow, Row, error_record, result_record
from rain_integrations.ray_cluster import Replicas
from rain_search.errors import RainError
from rain_search.extras import require
from rain_search.heap import freeze_loaded_heap
from rain_search.search import RainGenerator


class RainRowsActor:
    """A Ray Data actor: builds the generator once, then answers batches of rows."""

    def __init__(self, factory: Callable[[], RainGenerator]) -> None:
        self.generator = factory()
        freeze_loaded_heap()  # the actor's process only answers rows (rain_search/heap.py)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        records, errors = [], []
        for payload in batch["row"]:
            row = Row(**json.loads(str(payload)))
            try:
                record, failed = result_record(row, answer(self.generator, row)), False
            except RainError as exc:  # this row's settings or search failed: report, go on
                record, failed = error_record(row, str(exc)), True
            records.append(json.dumps(record, ensure_ascii=False))
            errors.append(failed)
        return {"record": records, "error": errors}


def run_ray(
    factory: Callable[[], RainGenerator],
    source: Path,
    folder: Path,
    *,
    pool: Replicas,
    on_row: RowCallback | None = None,
) -> BatchSummary:
    """Answer the rows of ``source`` not yet in ``folder`` on ``pool`` actors (``pool.count``)."""
    ray_data = require("ray.data", "ray", "rain batch --ray")
    batch = open_batch(source, folder)
    record = Recorder(batch.out, on_row)
    todo = []
    for row in batch.rows(record.summary):
        if isinstance(row, BadRow):
            record.bad(row)
        else:
            todo.append({"row": json.dumps(asdict(row), ensure_ascii=False)})
    if not todo:
        return record.summary
    answers = ray_data.from_items(todo).map_batches(
        RainRowsActor,
        fn_constructor_args=(factory,),
        batch_size=1,
        batch_format="numpy",
        compute=ray_data.ActorPoolStrategy(size=pool.count),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus,
    )
    for item in answers.iter_rows():
        written = json.loads(str(item["record"]))
        record(int(written["line"]), written, error=bool(item["error"]))
    return record.summary
