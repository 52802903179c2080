"""The ``rain`` command: generate, compare with vanilla decoding, list templates."""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from rain_search import __version__
from rain_search.config import PRESETS, RainConfig
from rain_search.errors import ConfigError, RainError
from rain_search.evaluators import Evaluator, FunctionEvaluator, ModelEvaluator
from rain_search.extras import require
from rain_search.result import RainResult, StepStats
from rain_search.templates import builtin_names, dump_template, load_template

if TYPE_CHECKING:
    from rain_integrations.batch.local import BatchSummary
    from rain_search.search import RainGenerator

EVALUATOR_HELP = (
    "who judges partial answers: 'self' (the model itself, default), 'model:PATH_OR_ID' "
    "(a second model), 'avoid:WORD[,WORD...]' (score -1 when a word appears, else +1), "
    "or 'python:MODULE:FUNCTION' (a callable text -> score in [-1, 1])"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return args.run(args)
    except RainError as exc:
        print(f"rain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rain: interrupted", file=sys.stderr)
        return 130


def quiet_libraries() -> None:
    """Our own progress lines replace the libraries' bars and notices on stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rain", description="RAIN: self-aligned generation by rewindable tree search."
    )
    parser.add_argument("--version", action="version", version=f"rain-search {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    generate = commands.add_parser("generate", help="answer a prompt with RAIN")
    add_generation_options(generate)
    generate.add_argument(
        "--explain",
        action="store_true",
        help="print the search tree: each step's candidates and the kept one",
    )
    generate.add_argument(
        "--explain-image", metavar="PATH", help="draw the search tree to PATH (.png, .svg or .pdf)"
    )
    generate.set_defaults(run=run_generate)
    compare = commands.add_parser("compare", help="vanilla decoding and RAIN side by side")
    add_generation_options(compare)
    compare.add_argument("--explain", action="store_true", help="also print RAIN's search tree")
    compare.set_defaults(run=run_compare)
    templates = commands.add_parser("templates", help="list evaluation templates or show one")
    templates.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    templates.add_argument("name", nargs="?", help="template name or file, for 'show'")
    templates.set_defaults(run=run_templates)
    serve = commands.add_parser(
        "serve", help="an OpenAI-compatible HTTP server (needs the 'serve' extra)"
    )
    add_model_options(serve)
    add_serve_options(serve)
    add_ray_options(serve, "replicas", "copies of the model")
    serve.set_defaults(run=run_serve)
    batch = commands.add_parser(
        "batch", help="answer every prompt of a .jsonl file into a folder (resumable)"
    )
    batch.add_argument("input", help="prompts, one JSON object a line: prompt or messages")
    batch.add_argument("output", help="folder for results.jsonl and errors.jsonl")
    add_model_options(batch)
    add_ray_options(batch, "actors", "actors that each hold a model")
    batch.set_defaults(run=run_batch)
    return parser


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the user's message")
    add_model_options(parser)
    parser.add_argument("--system", help="system message for chat models")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model, its search settings and its judge: what every generating command takes."""
    parser.add_argument(
        "--model",
        help="HF model id, local directory or .gguf file "
        "(default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--preset",
        default="paper",
        choices=sorted(PRESETS),
        help="named search settings (default: paper)",
    )
    parser.add_argument(
        "--template",
        help="evaluation template: a built-in name or a .yaml/.json file (default: harmless)",
    )
    parser.add_argument("--evaluator", default="self", help=EVALUATOR_HELP)
    parser.add_argument(
        "--embedder",
        default="minilm",
        choices=["minilm", "hidden"],
        help="sentence embedder for the similarity update (default: minilm)",
    )
    parser.add_argument("--max-new-tokens", type=int, help="override the preset's answer length")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


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
        help="seconds one answer may take once it has a slot; past it the request fails "
        "with 504 (default: 300)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="seconds a request may wait for a slot; past it, 503 (default: 60)",
    )


def run_generate(args: argparse.Namespace) -> int:
    if args.explain_image:  # before the search, not after it has run for minutes
        require("matplotlib", "plot", "--explain-image")
    generator = make_generator(args)
    result = generator.generate(args.prompt, system=args.system, on_step=progress(args))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.text)
        print(format_stats(result), file=sys.stderr)
    if args.explain:
        print(result.explain(), file=sys.stderr if args.json else sys.stdout)
    if args.explain_image:
        result.plot_tree(args.explain_image)
        print(f"rain: search tree drawn to {args.explain_image}", file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    generator = make_generator(args)
    generator.warm_up()  # one-off costs would otherwise count against whichever runs first
    vanilla = generator.vanilla(args.prompt, system=args.system)
    rain = generator.generate(args.prompt, system=args.system, on_step=progress(args))
    per_token, total = cost_ratios(rain, vanilla)
    if args.json:
        ratios = {"wall_time_per_token_ratio": per_token, "wall_time_ratio": total}
        print(
            json.dumps({"vanilla": vanilla.to_dict(), "rain": rain.to_dict(), **ratios}, indent=2)
        )
        return 0
    for name, result in (("vanilla", vanilla), ("RAIN", rain)):
        print(f"=== {name} ===\n{result.text}\n{format_stats(result)}\n")
    print(
        f"RAIN / vanilla wall time per committed token: {per_token:.1f}x "
        f"(totals {total:.1f}x, for {rain.completion_tokens} and "
        f"{vanilla.completion_tokens} tokens)"
    )
    if args.explain:
        print(f"\n{rain.explain()}")
    return 0


def cost_ratios(rain: RainResult, vanilla: RainResult) -> tuple[float, float]:
    """RAIN's wall time over vanilla's, per committed token and in total.

    Per token is the fair one: vanilla often stops at EOS well before RAIN's
    answer ends, and dividing the totals then charges RAIN for its longer answer.
    """
    per_token = (rain.wall_time / max(rain.completion_tokens, 1)) / max(
        vanilla.wall_time / max(vanilla.completion_tokens, 1), 1e-9
    )
    return per_token, rain.wall_time / max(vanilla.wall_time, 1e-9)


def run_serve(args: argparse.Namespace) -> int:
    """Load the model, then serve it until interrupted."""
    require("fastapi", "serve", "rain serve")
    require("uvicorn", "serve", "rain serve")
    from rain_integrations.server.limits import ServerLimits
    from rain_integrations.server.main import serve
    from rain_search.models import EMBEDDED_MODEL_NAME

    limits = ServerLimits(
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens=args.max_tokens,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        timeout=args.timeout,
        max_wait=args.max_wait,
    )
    name = args.model_name or args.model or EMBEDDED_MODEL_NAME
    if args.ray:
        from rain_integrations.server.ray_serve import Replicas, serve_with_ray

        replicas = Replicas(args.replicas, gpus=args.gpus_per_replica, cpus=args.cpus_per_replica)
        serve_with_ray(
            GeneratorSpec.from_args(args),
            replicas=replicas,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            limits=limits,
            model_name=name,
            address=args.ray_address,
        )
        return 0
    serve(
        make_generator(args),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        limits=limits,
        model_name=name,
        quiet=args.quiet,
    )
    return 0


def run_batch(args: argparse.Namespace) -> int:
    """Answer the rows not yet in the output folder; bad rows go to errors.jsonl."""
    from pathlib import Path

    from rain_integrations.batch import check_paths

    show = None if args.quiet else batch_progress
    source, folder = Path(args.input), Path(args.output)
    check_paths(source, folder)  # before a model loads for minutes
    if args.ray:
        from rain_integrations.batch.ray_data import ActorPool, run_ray
        from rain_integrations.ray_cluster import start_ray

        pool = ActorPool(args.actors, cpus=args.cpus_per_actor, gpus=args.gpus_per_actor)
        start_ray(args.ray_address, loopback=True, purpose="rain batch --ray")
        summary = run_ray(GeneratorSpec.from_args(args), source, folder, pool=pool, on_row=show)
    else:
        from rain_integrations.batch import run_local

        summary = run_local(make_generator(args), source, folder, on_row=show)
    print(
        f"rain: batch: {summary.answered} answered, {summary.errors} errors, "
        f"{summary.skipped} already done; see {args.output}/results.jsonl and errors.jsonl",
        file=sys.stderr,
    )
    return 0


def batch_progress(line: int, summary: BatchSummary) -> None:
    print(
        f"rain: line {line} done ({summary.answered} answered, {summary.errors} errors)",
        file=sys.stderr,
    )


def run_templates(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise ConfigError("'rain templates show' needs a template name, e.g. harmless")
        print(dump_template(load_template(args.name)), end="")
        return 0
    for name in builtin_names():
        print(f"{name:24} {load_template(name).description}")
    return 0


def make_generator(args: argparse.Namespace) -> RainGenerator:
    return GeneratorSpec.from_args(args)()


@dataclass(frozen=True)
class GeneratorSpec:
    """The command line's model, search and judge options; calling it builds the generator.

    It is plain data, so it can be sent to another process (a Ray Serve replica,
    a Ray Data actor) that builds its own generator there.
    """

    model: str | None = None
    preset: str = "paper"
    template: str | None = None
    evaluator: str = "self"
    embedder: str = "minilm"
    device: str | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    quiet: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GeneratorSpec:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def __call__(self) -> RainGenerator:
        from rain_search.models import load_model
        from rain_search.search import RainGenerator

        overrides = {
            key: value
            for key, value in (("max_new_tokens", self.max_new_tokens), ("seed", self.seed))
            if value is not None
        }
        config = RainConfig.preset(self.preset, **overrides)
        if not self.quiet:
            print(f"rain: loading {self.model or 'the embedded model'}...", file=sys.stderr)
        model, tokenizer = load_model(self.model, device=self.device)
        evaluator = parse_evaluator(self.evaluator, self.template, self.device)
        template = self.template if evaluator is None else None
        return RainGenerator(
            model, tokenizer, config, evaluator=evaluator, template=template, embedder=self.embedder
        )


def parse_evaluator(spec: str, template: str | None, device: str | None) -> Evaluator | None:
    """The ``--evaluator`` string as an evaluator (None means self-evaluation)."""
    kind, _, rest = spec.partition(":")
    if kind == "self" and not rest:
        return None
    if kind == "model" and rest:
        return ModelEvaluator.from_pretrained(rest, template or "harmless", device=device)
    if template is not None:
        raise ConfigError(f"--template applies to 'self' and 'model:' evaluators, not {spec!r}")
    if kind == "avoid" and rest:
        return FunctionEvaluator(avoid_words(rest.split(",")), name=f"avoid:{rest}")
    if kind == "python" and rest:
        return FunctionEvaluator(import_callable(rest))
    raise ConfigError(f"unknown --evaluator {spec!r}; {EVALUATOR_HELP}")


def avoid_words(words: Sequence[str]) -> Callable[[str], float]:
    """A keyword judge: -1 when any of ``words`` appears (case-insensitive), else +1."""
    lowered = [w.strip().lower() for w in words if w.strip()]
    if not lowered:
        raise ConfigError("'avoid:' needs at least one word, e.g. avoid:revenge,hurt")

    def score(text: str) -> float:
        text = text.lower()
        return -1.0 if any(word in text for word in lowered) else 1.0

    return score


def import_callable(path: str) -> Callable[..., float]:
    """``MODULE:FUNCTION`` (or ``MODULE.FUNCTION``) as the callable it names."""
    try:
        function = pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot import evaluator {path!r} ({exc}); use MODULE:FUNCTION") from exc
    if not callable(function):
        raise ConfigError(f"evaluator {path!r} is not callable")
    return function


def progress(args: argparse.Namespace) -> Callable[[StepStats], None] | None:
    if args.quiet:
        return None

    def show(step: StepStats) -> None:
        print(
            f"rain: step {step.index + 1}: {step.text!r} ({step.iterations} iterations, "
            f"q={step.value:+.2f}, {step.wall_time:.1f}s)",
            file=sys.stderr,
        )

    return show


def format_stats(result: RainResult) -> str:
    s = result.stats
    lines = [
        f"[{s['mode']}] {s['completion_tokens']} tokens, finish={s['finish_reason']}, "
        f"{s['wall_time']:.1f}s",
        f"  forward calls {s['forward_calls']} ({s['forward_calls_per_token']:.1f}/token), "
        f"tokens processed {s['tokens_processed']} ({s['tokens_processed_per_token']:.1f}/token)",
    ]
    if result.mode == "rain":
        lines.append(
            f"  steps {s['steps']}, iterations {s['iterations']}, nodes expanded "
            f"{s['nodes_expanded']}, evaluator calls {s['evaluator_calls']} "
            f"(cache hits {s['cache_hits']})"
        )
    lines.extend(f"  warning: {w}" for w in result.warnings)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
