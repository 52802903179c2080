"""The ``rain serve`` and ``rain batch`` subcommands, added to the core's ``rain`` command.

They need the server and batch parts of this package (and FastAPI, uvicorn or
Ray, loaded only when a command runs), so they live here; the core's
command line finds :func:`add_serve` and :func:`add_batch` through the
``rain_search.commands`` entry points declared in ``pyproject.toml`` and never
imports this package itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from rain_search.cli import add_model_options, make_generator
from rain_search.extras import require
from rain_search.spec import GeneratorSpec

if TYPE_CHECKING:
    from pathlib import Path

    from rain_integrations.batch.local import BatchSummary, RowCallback
    from rain_integrations.ray_cluster import Replicas
    from rain_search.cli import Commands


def add_serve(commands: Commands) -> None:
    serve = commands.add_parser(
        "serve", help="an OpenAI-compatible HTTP server (needs the 'serve' extra)"
    )
    add_model_options(serve)
    add_serve_options(serve)
    add_ray_options(serve, "replicas", "copies of the model")
    serve.set_defaults(run=run_serve)


def add_batch(commands: Commands) -> None:
    batch = commands.add_parser(
        "batch", help="answer every prompt of a .jsonl file into a folder (resumable)"
    )
    batch.add_argument("input", help="prompts, one JSON object a line: prompt or messages")
    batch.add_argument("output", help="folder for results.jsonl and errors.jsonl")
    add_model_options(batch)
    add_ray_options(batch, "actors", "actors that each hold a model")
    batch.set_defaults(run=run_batch)


def add_ray_options(parser: argparse.ArgumentParser, units: str, what: str) -> None:
    """``--ray``, where the cluster is, and the pool of model holders (replicas or actors)."""
    unit = units.removesuffix("s")
    parser.add_argument(
        "--ray", action="store_true", help="run on a Ray cluster (needs the 'ray' extra)"
    )
    parser.add_argument(
        "--ray-address",
        help="an existing Ray cluster to join, e.g. auto (default: start a local one)",
    )
    parser.add_argument(f"--{units}", type=int, default=1, help=f"with --ray: {what} (1)")
    for kind, default in (("cpus", 1.0), ("gpus", 0.0)):
        parser.add_argument(
            f"--{kind}-per-{unit}",
            type=float,
            default=default,
            help=f"with --ray: {kind.upper()} per {unit} ({default:g})",
        )


def ray_replicas(args: argparse.Namespace, unit: str) -> Replicas:
    """The model copies :func:`add_ray_options` asked for (``unit``: replica or actor)."""
    from rain_integrations.ray_cluster import Replicas

    return Replicas(
        getattr(args, f"{unit}s"),
        gpus=getattr(args, f"gpus_per_{unit}"),
        cpus=getattr(args, f"cpus_per_{unit}"),
        unit=unit,
    )


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Where ``rain serve`` listens, who may call it and how much it takes on."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("RAIN_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 routes (default: $RAIN_API_KEY)",
    )
    parser.add_argument(
        "--model-name", help="the name clients send as 'model' (default: the model's name)"
    )
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=4096, help="longest prompt (default: 4096)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=512, help="largest max_tokens a request may ask (512)"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=8,
        help="searches run at once, sharing forward calls (default: 8)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=8,
        help="searches that may wait for a slot; more get 429 (default: 8)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds one answer may take once it has a slot: at that moment the request "
        "gets a 504 (a stream, an error event) and its search is stopped, even mid-step "
        "(default: 300)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="seconds a request may wait for a slot; past it, 503 (default: 60)",
    )


def run_serve(args: argparse.Namespace) -> int:
    """Load the model, then serve it until interrupted."""
    require("fastapi", "serve", "rain serve")
    require("uvicorn", "serve", "rain serve")
    from rain_integrations.server.main import serve
    from rain_integrations.server.options import ServeOptions
    from rain_search.models import EMBEDDED_MODEL_NAME

    options = ServeOptions.from_args(args, args.model_name or args.model or EMBEDDED_MODEL_NAME)
    if args.ray:
        from rain_integrations.server.ray_serve import serve_with_ray

        serve_with_ray(
            GeneratorSpec.from_args(args),
            options,
            replicas=ray_replicas(args, "replica"),
            address=args.ray_address,
        )
        return 0
    serve(make_generator(args), options, quiet=args.quiet)
    return 0


def run_batch(args: argparse.Namespace) -> int:
    """Answer the rows not yet in the output folder; bad rows go to errors.jsonl.

    The paths and the output already there are checked first, and a job with no
    row left to answer ends there: the model loads only for work it will do.
    """
    from pathlib import Path

    from rain_integrations.batch import finish_without_model, open_batch

    show = None if args.quiet else batch_progress
    source, folder = Path(args.input), Path(args.output)
    pool = ray_replicas(args, "actor") if args.ray else None
    batch = open_batch(source, folder)  # before a model loads for minutes
    for note in batch.repairs:
        print(f"rain: batch: {note}", file=sys.stderr)
    summary = finish_without_model(batch, on_row=show)
    if summary is None:
        summary = answer_rows(args, source, folder, show, pool)
    print(
        f"rain: batch: {summary.answered} answered, {summary.errors} errors, "
        f"{summary.skipped} already done; see {args.output}/results.jsonl and errors.jsonl",
        file=sys.stderr,
    )
    return 0


def answer_rows(
    args: argparse.Namespace,
    source: Path,
    folder: Path,
    show: RowCallback | None,
    pool: Replicas | None,
) -> BatchSummary:
    """Load the model (in this process, or on the ``pool`` of Ray actors) and answer the
    rows left."""
    if pool is not None:
        from rain_integrations.batch.ray_data import run_ray
        from rain_integrations.ray_cluster import start_ray

        start_ray(args.ray_address, loopback=True, purpose="rain batch --ray")
        return run_ray(GeneratorSpec.from_args(args), source, folder, pool=pool, on_row=show)
    from rain_integrations.batch import run_local
    from rain_search.heap import freeze_loaded_heap

    generator = make_generator(args)
    freeze_loaded_heap()  # this process is there to answer the rows: see rain_search/heap.py
    return run_local(generator, source, folder, on_row=show)


def batch_progress(line: int, summary: BatchSummary) -> None:
    print(
        f"rain: line {line} done ({summary.answered} answered, {summary.errors} errors)",
        file=sys.stderr,
    )
