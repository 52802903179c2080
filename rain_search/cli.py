"""The ``rain`` command: generate, compare with vanilla decoding, list templates.

Commands that need an optional part (``serve``, ``batch``) live with that part
in ``rain_integrations`` and join the parser through the ``rain_search.commands``
entry point group, so the core never imports its adapters: each entry point
is a function that adds its subcommands to the parser it is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from rain_search import __version__
from rain_search.config import PRESETS
from rain_search.errors import ConfigError, RainError
from rain_search.extras import require
from rain_search.result import RainResult, StepStats
from rain_search.spec import EVALUATOR_HELP, GeneratorSpec
from rain_search.templates import builtin_names, dump_template, load_template

if TYPE_CHECKING:
    from rain_search.search import RainGenerator

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
    """What a subcommand is added to: the ``rain`` parser's subparsers."""

COMMANDS_GROUP = "rain_search.commands"
"""The entry point group of subcommands other packages (ours among them) add."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    run: Callable[[argparse.Namespace], int] = args.run  # the chosen command's set_defaults
    try:
        return run(args)
    except RainError as exc:
        print(f"rain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rain: interrupted", file=sys.stderr)
        return 130


def quiet_libraries() -> None:
    """Our own progress lines replace the libraries' bars and notices on stderr.

    Not loaded yet, transformers and the hub read these settings from the
    environment when they load, so a command that never needs them (``--help``,
    a ``rain batch`` with nothing left to do) does not import them for this.
    """
    if "transformers" not in sys.modules and "huggingface_hub" not in sys.modules:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        return
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
    for register in command_plugins():  # serve, batch: they live with the adapters
        register(commands)
    return parser


def command_plugins() -> list[Callable[[Commands], None]]:
    """The functions that add subcommands, from installed distributions' entry points
    (in name order, so ``rain --help`` lists them the same way every time)."""
    found = sorted(entry_points(group=COMMANDS_GROUP), key=lambda point: point.name)
    return [point.load() for point in found]


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
    parser.add_argument(
        "--max-batch-rows",
        type=int,
        help="rows the concurrent searches may hold in one forward call; the rest wait "
        "(default: 320 on a CPU; 4096 on a GPU, fewer where their logits would take over a "
        "tenth of its free memory)",
    )
    parser.add_argument(
        "--max-batch-kv-tokens",
        type=int,
        help="key/value positions the concurrent searches may hold "
        "(default: what fits 4 GiB on a CPU, half the free GPU memory)",
    )
    parser.add_argument(
        "--batch-invariant",
        action="store_true",
        help="each search's rows in calls of their own: every answer is its solo answer bit "
        "for bit in any dtype, at the price of the shared calls' throughput",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


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
