"""Speed: vanilla decoding vs RAIN with the shared KV cache vs RAIN re-encoding everything.

    python -m benchmarks.speed            # full run (about 20 minutes on 2 CPU cores)
    python -m benchmarks.speed --quick    # a few minutes: fewer prompts, shorter answers
    python -m benchmarks.speed --model random:7b --device cuda   # a 7B-shaped Llama on a GPU

Every run uses the same prompts, model and seed. Costs are per committed
output token: wall time, sequential forward calls, tokens the model processed
(batch rows x sequence length, prompt and judge included) and the peak memory
the generation added. Results go to ``benchmarks/results/speed[-quick].json``
and a plot beside it; the two targets are checked and reported, not asserted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, load, machine, now, per_token, read_lines, table, write_json
from benchmarks.common import timed_run as run
from benchmarks.judges import tone
from rain_search import RainConfig, RainGenerator

TARGET_WALL_RATIO = 4.0  # fast preset + function evaluator vs vanilla, wall time
TARGET_TOKEN_SAVING = 5.0  # paper preset: re-encoding / cached, tokens processed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model, tokenizer = load(args.model, args.device)
    sizes = QUICK if args.quick else FULL
    prompts = read_lines("speed_prompts.txt")[: sizes["prompts"]]
    generators = {
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
    for generator in generators.values():
        generator.warm_up()
    print(f"[{now()}] model {args.model or 'embedded SmolLM2-135M'} on {model.device}", flush=True)

    modes = compare_modes(generators, prompts, sizes)
    paper = compare_paper(generators, prompts[0], sizes)
    iterations = scale_iterations(generators[("self", True)], prompts[0], sizes)
    report = {
        "machine": machine(),
        "model": args.model or "embedded SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
        "device": str(model.device),
        "sizes": sizes,
        "modes": modes,
        "paper": paper,
        "iterations": iterations,
        "targets": targets(modes, paper),
    }
    name = "speed-quick" if args.quick else "speed"
    if args.model:
        name += "-" + args.model.replace(":", "-").replace("/", "-")
    path = write_json(name, report, args.out)
    plot(report, path.with_suffix(".png"))
    print_report(report)
    print(f"\nwrote {path} and {path.with_suffix('.png')}")
    return 0


FULL = {"prompts": 3, "tokens": 48, "paper_tokens": 24, "iterations": [10, 20, 35, 50]}
QUICK = {"prompts": 1, "tokens": 24, "paper_tokens": 8, "iterations": [10, 25]}

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
    """The paper's settings (T=50, 15 fresh iterations), self-judged, cached vs re-encoding."""
    out = {}
    for kv in (True, False):
        config = RainConfig.preset("paper", max_new_tokens=sizes["paper_tokens"], seed=0)
        result, peak = run(generators[("self", kv)], prompt, "rain", config=config)
        label = "rain paper, self-judge" + ("" if kv else ", re-encode")
        out[label] = per_token(result, peak)
        log(label, prompt, out[label])
    return out


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


def step_costs(result: Any) -> list[dict[str, float]]:
    """Each committed step's cost, by the answer length when it was committed.

    Tokens processed per forward call show the prefix effect directly: with the
    shared cache a call reads only new tokens, so it stays flat as the answer
    grows; re-encoding reads the whole text every time, so it grows with it.
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
    mean = modes["mean"]
    wall = mean["rain fast, function judge"]["wall_time"] / mean["vanilla"]["wall_time"]
    saving = (
        paper["rain paper, self-judge, re-encode"]["tokens_processed"]
        / paper["rain paper, self-judge"]["tokens_processed"]
    )
    return {
        "fast_function_wall_vs_vanilla": {
            "measured": wall,
            "target": f"<= {TARGET_WALL_RATIO}",
            "met": wall <= TARGET_WALL_RATIO,
        },
        "paper_tokens_reencode_vs_cached": {
            "measured": saving,
            "target": f">= {TARGET_TOKEN_SAVING}",
            "met": saving >= TARGET_TOKEN_SAVING,
        },
    }


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


def print_report(report: dict[str, Any]) -> None:
    vanilla = report["modes"]["mean"]["vanilla"]
    rows = []
    for label, row in {**report["modes"]["mean"], **report["paper"]}.items():
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
    print("\ncost vs iteration budget T (paper preset, self-judge):")
    print(
        table(
            report["iterations"],
            ["T", "completion_tokens", "wall_time", "forward_calls", "tokens_processed"],
        )
    )
    print("\ntargets:")
    for name, target in report["targets"].items():
        verdict = "met" if target["met"] else "MISSED"
        print(f"  {name}: {target['measured']:.2f} (target {target['target']}) {verdict}")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, growth, budget) = plt.subplots(1, 3, figsize=(16, 4.8))
    vanilla = report["modes"]["mean"]["vanilla"]["wall_time"]
    entries = {**report["modes"]["mean"], **report["paper"]}
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

    for label, color in (
        ("rain fast, self-judge", "tab:blue"),
        ("rain fast, self-judge, re-encode", "tab:orange"),
    ):
        for i, steps in enumerate(report["modes"]["steps"].get(label, [])):
            growth.plot(
                [s["position"] for s in steps],
                [s["tokens_per_forward_call"] for s in steps],
                "o-",
                color=color,
                alpha=0.8,
                label=label if i == 0 else None,
            )
    growth.set_yscale("log")
    growth.set_xlabel("answer length when the step was committed (tokens)")
    growth.set_ylabel("tokens processed per forward call")
    growth.set_title("prefix re-reading as the answer grows")
    growth.legend()

    rows = report["iterations"]
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model id or path, or random:7b / random:1b / random:tiny")
    parser.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--quick", action="store_true", help="the short version (minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
