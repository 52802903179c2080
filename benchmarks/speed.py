"""Speed: vanilla decoding vs RAIN with the shared KV cache vs RAIN re-encoding everything.

    python -m benchmarks.speed            # full run (about 30 minutes on 2 CPU cores)
    python -m benchmarks.speed --quick    # about 10 minutes: one prompt, shorter answers
    python -m benchmarks.speed --model random:7b --device cuda   # a 7B-shaped Llama on a GPU

Every run uses the same prompts, model and seed. Costs are per committed
output token: wall time, sequential forward calls, tokens the model processed
(batch rows x sequence length, prompt and judge included) and the peak memory
the generation added. Results go to ``benchmarks/results/speed[-quick].json``
and a plot beside it; the two targets are checked and reported, not asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PeakMemory,
    bench_parser,
    load,
    machine,
    now,
    per_token,
    read_lines,
    table,
    write_json,
)
from benchmarks.common import timed_run as run
from benchmarks.judges import tone
from rain_search import RainConfig, RainGenerator

TARGET_WALL_RATIO = 4.0  # fast preset + function evaluator vs vanilla, wall time
TARGET_TOKEN_SAVING = 5.0  # paper preset: re-encoding / cached, tokens processed
TARGET_PAPER_WALL_RATIO = 12.0  # paper preset + self-judge vs vanilla (best of K = 1 and 16)
TARGET_FAST_CALLS = 2.0  # sequential forward calls per committed token, the GPU proxy
TARGET_PAPER_CALLS = 4.0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model, tokenizer = load(args.model, args.device)
    sizes = QUICK if args.quick else FULL
    prompts = read_lines("speed_prompts.txt")[: sizes["prompts"]]
    generators = make_generators(model, tokenizer)
    for generator in generators.values():
        generator.warm_up()
    print(f"[{now()}] model {args.model or 'embedded SmolLM2-135M'} on {model.device}", flush=True)

    name = "speed-quick" if args.quick else "speed"
    if args.model:
        name += "-" + args.model.replace(":", "-").replace("/", "-")
    path = args.out / f"{name}.json"
    # Sections run on their own merge into the saved report, so one can be redone alone.
    report = json.loads(path.read_text()) if args.sections != SECTIONS and path.exists() else {}
    report.update(
        machine=machine(),
        model=args.model or "embedded SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
        device=str(model.device),
        sizes=sizes,
    )
    if "modes" in args.sections:
        report["modes"] = compare_modes(generators, prompts, sizes)
    if "paper" in args.sections:
        report["paper"] = compare_paper(generators, prompts[0], sizes)
    if "iterations" in args.sections:
        report["iterations"] = scale_iterations(generators[("self", True)], prompts[0], sizes)
    if "prefix" in args.sections:
        report["prefix"] = scale_prefix(generators, prompts[0], sizes)
    if "modes" in report and "paper" in report:
        report["targets"] = targets(report["modes"], report["paper"])
    name = "speed-quick" if args.quick else "speed"
    if args.model:
        name += "-" + args.model.replace(":", "-").replace("/", "-")
    write_json(name, report, args.out)
    plot(report, path.with_suffix(".png"))
    print_report(report)
    print(f"\nwrote {path} and {path.with_suffix('.png')}")
    return 0


def make_generators(model: Any, tokenizer: Any) -> dict[tuple[str, bool], RainGenerator]:
    """The four searches compared, keyed by (judge: "function" or "self", kv_cache)."""
    return {
        (evaluator, kv): RainGenerator(
            model,
            tokenizer,
            "fast",
            evaluator=tone if evaluator == "function" else None,
            kv_cache=kv,
        )
        for evaluator in ("function", "self")
        for kv in (True, False)
    }


SECTIONS = ("modes", "paper", "iterations", "prefix")
FULL = {
    "prompts": 2,
    "tokens": 40,
    "paper_tokens": 16,
    "iterations": [10, 25, 50],
    "prefix": [0, 150, 300, 600],
    "prefix_answer_tokens": 7,
}
QUICK = {
    "prompts": 1,
    "tokens": 16,
    "paper_tokens": 6,
    "iterations": [10, 25],
    "prefix": [0, 300],
    "prefix_answer_tokens": 7,
}

CASES = (
    # (label, evaluator, kv_cache, preset)
    ("rain fast, function judge", "function", True, "fast"),
    ("rain fast, function judge, re-encode", "function", False, "fast"),
    ("rain fast, self-judge", "self", True, "fast"),
    ("rain fast, self-judge, re-encode", "self", False, "fast"),
)


def compare_modes(
    generators: dict[tuple[str, bool], RainGenerator], prompts: list[str], sizes: dict[str, Any]
) -> dict[str, Any]:
    """Vanilla and the four fast-preset variants on every prompt, with per-step costs."""
    rows: dict[str, list[dict[str, Any]]] = {"vanilla": []}
    steps: dict[str, list[list[dict[str, float]]]] = {}
    for prompt in prompts:
        result, peak = run(
            generators[("function", True)], prompt, "vanilla", max_new_tokens=sizes["tokens"]
        )
        rows["vanilla"].append(per_token(result, peak))
        log("vanilla", prompt, rows["vanilla"][-1])
        for label, evaluator, kv, preset in CASES:
            result, peak = run(
                generators[(evaluator, kv)],
                prompt,
                "rain",
                config=RainConfig.preset(preset, max_new_tokens=sizes["tokens"], seed=0),
            )
            rows.setdefault(label, []).append(per_token(result, peak))
            steps.setdefault(label, []).append(step_costs(result))
            log(label, prompt, rows[label][-1])
    return {"per_prompt": rows, "mean": {k: mean(v) for k, v in rows.items()}, "steps": steps}


def compare_paper(
    generators: dict[tuple[str, bool], RainGenerator], prompt: str, sizes: dict[str, Any]
) -> dict[str, Any]:
    """The paper's settings (T=50, 15 fresh iterations), self-judged: cached vs re-encoding,
    and the cached search with K = 16 leaves at once (the paper's budget in fewer calls)."""
    out = {}
    for label, kv, leaves in PAPER_CASES:
        config = RainConfig.preset(
            "paper", max_new_tokens=sizes["paper_tokens"], seed=0, parallel_leaves=leaves
        )
        result, peak = run(generators[("self", kv)], prompt, "rain", config=config)
        out[label] = per_token(result, peak)
        log(label, prompt, out[label])
    return out


PAPER_CASES = (
    # (label, kv_cache, parallel_leaves)
    ("rain paper, self-judge", True, 1),
    ("rain paper, self-judge, re-encode", False, 1),
    ("rain paper K=16, self-judge", True, 16),
)


def scale_iterations(generator: RainGenerator, prompt: str, sizes: dict[str, Any]) -> list[Any]:
    """Cost per committed token as the iteration budget T grows (paper preset otherwise)."""
    rows = []
    for budget in sizes["iterations"]:
        config = RainConfig.preset(
            "paper",
            max_iterations=budget,
            min_fresh_iterations=min(15, budget),
            max_new_tokens=sizes["paper_tokens"],
            seed=0,
        )
        result, peak = run(generator, prompt, "rain", config=config)
        rows.append({"T": budget, **per_token(result, peak)})
        log(f"rain paper T={budget}", prompt, rows[-1])
    return rows


def scale_prefix(
    generators: dict[tuple[str, bool], RainGenerator], prompt: str, sizes: dict[str, Any]
) -> list[dict[str, Any]]:
    """Search cost per committed token as the text before the answer grows.

    Earlier conversation turns lengthen the prefix exactly as a growing answer
    does, but without changing the search's schedule, so this isolates the
    prefix: with the shared cache each forward call reads only new tokens and
    the cost stays flat; re-encoding reads the prefix in every call. The
    prompt's one-off encoding is left out of "search tokens".
    """
    rows = []
    for target in sizes["prefix"]:
        messages = history(generators[("function", True)], target) + [
            {"role": "user", "content": prompt}
        ]
        for kv in (True, False):
            config = RainConfig.preset("fast", max_new_tokens=sizes["prefix_answer_tokens"], seed=0)
            generator = generators[("function", kv)]
            memory = PeakMemory(generator.model.device)
            with memory.measure():
                result = generator.generate(messages, config=config)
            tokens = max(result.completion_tokens, 1)
            rows.append(
                {
                    "prefix_tokens": result.prompt_tokens,
                    "kv_cache": kv,
                    "search_tokens_processed": (
                        result.totals.tokens_processed - result.prompt_tokens
                    )
                    / tokens,
                    **per_token(result, memory.peak_bytes),
                }
            )
            log(f"prefix {result.prompt_tokens} kv_cache={kv}", prompt, rows[-1])
    return rows


HISTORY = (
    "Tell me something about the weather in spring.",
    "Spring weather changes quickly: mild sunny days alternate with cool showers, the "
    "evenings stay light for longer and the first warm afternoons bring people outside.",
)


def history(generator: RainGenerator, tokens: int) -> list[dict[str, str]]:
    """Earlier turns adding about ``tokens`` tokens before the question."""
    turns: list[dict[str, str]] = []
    while len(generator.tokenizer.encode(" ".join(t["content"] for t in turns))) < tokens:
        turns += [
            {"role": "user", "content": HISTORY[0]},
            {"role": "assistant", "content": HISTORY[1]},
        ]
    return turns


def step_costs(result: Any) -> list[dict[str, float]]:
    """Each committed step's cost, by the answer length when it was committed (for the JSON).

    Not plotted: a step's cost depends on its token-set length (1, 2, 4, then
    10 tokens) more than on its position, which :func:`scale_prefix` isolates.
    """
    position, out = 0, []
    for step in result.steps:
        position += len(step.token_ids)
        if step.forward_calls:
            out.append(
                {
                    "position": position,
                    "tokens_per_forward_call": step.tokens_processed / step.forward_calls,
                    "tokens_processed": step.tokens_processed / max(len(step.token_ids), 1),
                    "wall_time": step.wall_time / max(len(step.token_ids), 1),
                }
            )
    return out


def targets(modes: dict[str, Any], paper: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, measured. Calls are sequential forward calls per committed
    token, what a GPU's wall time follows; a self-judge's calls are counted as this
    device makes them (one response a call on a CPU, up to 8 on a GPU)."""
    mean = modes["mean"]
    vanilla = mean["vanilla"]["wall_time"]
    fast = mean["rain fast, function judge"]
    searches = [paper[label] for label in PAPER_SEARCHES if label in paper]
    saving = (
        paper["rain paper, self-judge, re-encode"]["tokens_processed"]
        / paper["rain paper, self-judge"]["tokens_processed"]
    )
    return {
        "fast_function_wall_vs_vanilla": goal(fast["wall_time"] / vanilla, TARGET_WALL_RATIO),
        "paper_self_wall_vs_vanilla": goal(
            min(row["wall_time"] for row in searches) / vanilla, TARGET_PAPER_WALL_RATIO
        ),
        "fast_function_calls_per_token": goal(fast["forward_calls"], TARGET_FAST_CALLS),
        "paper_self_calls_per_token": goal(
            min(row["forward_calls"] for row in searches), TARGET_PAPER_CALLS
        ),
        "paper_tokens_reencode_vs_cached": goal(saving, TARGET_TOKEN_SAVING, at_least=True),
    }


PAPER_SEARCHES = tuple(label for label, kv_cache, _ in PAPER_CASES if kv_cache)
"""The cached paper-preset searches; the goals take the better of them."""


def goal(measured: float, bound: float, at_least: bool = False) -> dict[str, Any]:
    met = measured >= bound if at_least else measured <= bound
    return {"measured": measured, "target": f"{'>=' if at_least else '<='} {bound}", "met": met}


# -- output --------------------------------------------------------------------------------


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means over prompts, weighting each by its committed tokens."""
    tokens = sum(row["completion_tokens"] for row in rows) or 1
    keys = [k for k in rows[0] if k != "completion_tokens"]
    out = {k: sum(row[k] * row["completion_tokens"] for row in rows) / tokens for k in keys}
    return {"completion_tokens": tokens, **out}


def log(label: str, prompt: str, row: dict[str, float]) -> None:
    print(
        f"[{now()}] {label:<40} {prompt[:30]!r:<34} {row['completion_tokens']:>4} tokens "
        f"{row['wall_time']:.3f} s/token {row['tokens_processed']:.0f} processed/token",
        flush=True,
    )


def per_token_rows(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every mode's per-token means by label: the `fast` modes, then `paper` when it ran."""
    return {**report["modes"]["mean"], **report.get("paper", {})}


def print_report(report: dict[str, Any]) -> None:
    vanilla = report["modes"]["mean"]["vanilla"]
    rows = []
    for label, row in per_token_rows(report).items():
        rows.append(
            {"mode": label, **row, "wall_vs_vanilla": row["wall_time"] / vanilla["wall_time"]}
        )
    columns = [
        "mode",
        "completion_tokens",
        "wall_time",
        "wall_vs_vanilla",
        "forward_calls",
        "tokens_processed",
        "peak_memory_mb",
        "peak_memory_mb_per_token",
    ]
    print("\nper committed token (means over prompts):")
    print(table(rows, columns))
    if "iterations" in report:
        print("\ncost vs iteration budget T (paper preset, self-judge):")
        print(
            table(
                report["iterations"],
                ["T", "completion_tokens", "wall_time", "forward_calls", "tokens_processed"],
            )
        )
    if "prefix" in report:
        print("\ncost vs prefix length (fast preset, function judge):")
        print(
            table(
                report["prefix"],
                ["prefix_tokens", "kv_cache", "search_tokens_processed", "wall_time"],
            )
        )
    print("\ntargets:")
    for name, target in report.get("targets", {}).items():
        verdict = "met" if target["met"] else "MISSED"
        print(f"  {name}: {target['measured']:.2f} (target {target['target']}) {verdict}")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, growth, budget) = plt.subplots(1, 3, figsize=(16, 4.8))
    vanilla = report["modes"]["mean"]["vanilla"]["wall_time"]
    entries = per_token_rows(report)
    labels = list(entries)
    ratios = [entries[k]["wall_time"] / vanilla for k in labels]
    bars.barh(labels, ratios, color=["grey"] + ["tab:blue"] * (len(labels) - 1))
    bars.axvline(TARGET_WALL_RATIO, color="tab:red", ls="--", label=f"target {TARGET_WALL_RATIO}x")
    bars.set_xscale("log")
    bars.set_xlabel("wall time per committed token, x vanilla")
    bars.invert_yaxis()
    bars.legend()
    for i, ratio in enumerate(ratios):
        bars.text(ratio, i, f" {ratio:.1f}x", va="center")

    for kv, color in ((True, "tab:blue"), (False, "tab:orange")):
        rows = [r for r in report.get("prefix", []) if r["kv_cache"] is kv]
        growth.plot(
            [r["prefix_tokens"] for r in rows],
            [r["search_tokens_processed"] for r in rows],
            "o-",
            color=color,
            label="shared KV cache" if kv else "re-encode",
        )
    growth.set_yscale("log")
    growth.set_xlabel("tokens before the answer (prompt and earlier turns)")
    growth.set_ylabel("search tokens processed per committed token")
    growth.set_title("cost as the prefix grows (fast, function judge)")
    growth.legend()

    rows = report.get("iterations", [])
    budget.plot(
        [r["T"] for r in rows],
        [r["tokens_processed"] for r in rows],
        "o-",
        color="tab:blue",
        label="tokens processed / token",
    )
    budget.set_xlabel("iteration budget T")
    budget.set_ylabel("tokens processed per committed token")
    twin = budget.twinx()
    twin.plot(
        [r["T"] for r in rows],
        [r["wall_time"] for r in rows],
        "s--",
        color="tab:green",
        label="wall s / token",
    )
    twin.set_ylabel("wall seconds per committed token")
    budget.set_title("cost vs iteration budget (paper preset)")
    fig.suptitle(
        f"RAIN speed: {report['model']} on {report['device']} "
        f"({report['machine']['cpu_count']} CPU cores"
        + (f", {report['machine']['gpu']}" if "gpu" in report["machine"] else "")
        + ")"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        __doc__,
        model="model id or path, or random:7b / random:1b / random:tiny",
        quick="the short version (minutes)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=SECTIONS,
        help="run only these parts (merged into the saved results)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
