"""Quality: does the search make answers better, judged by something it did not optimise?

    python -m benchmarks.quality            # full run: 50 tone prompts, 12 harmful requests
    python -m benchmarks.quality --quick    # a few minutes
    python -m benchmarks.quality --part harm --model <id> --preset paper   # on a bigger model

Two parts, each vanilla greedy decoding vs RAIN on the same prompts:

- ``tone`` (search efficacy, runs on a CPU): the embedded 135M model cannot
  judge itself, so the search is given a keyword judge (a warm/cold word
  lexicon). Answers are scored by that judge *and* by a held-out judge it never
  sees (MiniLM similarity to warm vs cold reference replies), so a gain is not
  only the search gaming its own word list.
- ``harm`` (harmlessness): harmful requests (``data/harmful_requests.txt``),
  RAIN with self-evaluation through the ``harmless`` template; answers are
  judged by a refusal-phrase matcher and by the harmless template itself.
  On a 135M model self-evaluation is near chance, so expect little here; the
  point of this part is to run it on a bigger ``--model``.

Results go to ``benchmarks/results/quality[-quick].json`` and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import bench_parser, load, machine, now, read_lines, table, write_json
from benchmarks.judges import EmbeddingToneJudge, refuses, tone
from rain_search import RainConfig, RainGenerator
from rain_search.evaluators import ModelEvaluator

FULL = {"tone_prompts": 50, "tone_tokens": 24, "harm_prompts": 12, "harm_tokens": 24}
QUICK = {"tone_prompts": 8, "tone_tokens": 24, "harm_prompts": 3, "harm_tokens": 16}


def config(args: argparse.Namespace) -> RainConfig:
    """The preset, with K parallel leaves when ``--leaves`` is given."""
    if args.leaves is None:
        return RainConfig.preset(args.preset)
    return RainConfig.preset(args.preset, parallel_leaves=args.leaves)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = {**(QUICK if args.quick else FULL)}
    if args.limit:
        sizes["tone_prompts"] = sizes["harm_prompts"] = args.limit
    model, tokenizer = load(args.model, args.device)
    report: dict[str, Any] = {
        "machine": machine(),
        "model": args.model or "embedded SmolLM2-135M-Instruct",
        "device": str(model.device),
        "preset": args.preset,
        "parallel_leaves": args.leaves,
        "sizes": sizes,
    }
    if args.part in ("tone", "both"):
        generator = RainGenerator(model, tokenizer, config(args), evaluator=tone)
        generator.warm_up()
        prompts = read_lines("tone_prompts.txt")[: sizes["tone_prompts"]]
        held_out = EmbeddingToneJudge()
        judges: dict[str, Judge] = {
            "tone lexicon (search's judge)": lambda text, prompt: tone(text),
            "embedding tone (held out)": lambda text, prompt: held_out(text),
        }
        report["tone"] = compare(generator, prompts, sizes["tone_tokens"], judges)
    if args.part in ("harm", "both"):
        generator = RainGenerator(model, tokenizer, config(args), template="harmless")
        generator.warm_up()
        prompts = read_lines("harmful_requests.txt")[: sizes["harm_prompts"]]
        template_judge = ModelEvaluator(model, tokenizer, "harmless")
        judges = {
            "refusal matcher": lambda text, prompt: float(refuses(text)),
            "harmless template": lambda text, prompt: template_judge.score(prompt, [text])[0],
        }
        report["harm"] = compare(generator, prompts, sizes["harm_tokens"], judges)
    if args.against is not None:
        report["paired"] = paired_with(report, json.loads(args.against.read_text(encoding="utf-8")))
    name = "quality-quick" if args.quick else "quality"
    if args.leaves is not None:
        name += f"-k{args.leaves}"
    if args.model:
        name += "-" + args.model.replace(":", "-").replace("/", "-")
    path = write_json(name, report, args.out)
    plot(report, path.with_suffix(".png"))
    print_report(report)
    print(f"\nwrote {path} and {path.with_suffix('.png')}")
    return 0


Judge = Callable[[str, str], float]
"""Scores an answer given its prompt: judge(text, prompt)."""


def compare(
    generator: RainGenerator, prompts: list[str], tokens: int, judges: dict[str, Judge]
) -> dict[str, Any]:
    """Vanilla and RAIN answers to every prompt, each scored by every judge."""
    rows = []
    for prompt in prompts:
        vanilla = generator.vanilla(prompt, max_new_tokens=tokens)
        rain = generator.generate(prompt, max_new_tokens=tokens, seed=0)
        row: dict[str, Any] = {"prompt": prompt, "vanilla": vanilla.text, "rain": rain.text}
        for name, judge in judges.items():
            row[name] = {
                "vanilla": judge(vanilla.text, prompt),
                "rain": judge(rain.text, prompt),
            }
        row["rain_wall_time"], row["vanilla_wall_time"] = rain.wall_time, vanilla.wall_time
        rows.append(row)
        scores = "  ".join(
            f"{name.split(' (')[0]}: {row[name]['vanilla']:+.2f} -> {row[name]['rain']:+.2f}"
            for name in judges
        )
        print(f"[{now()}] {prompt[:50]!r:<54} {scores}", flush=True)
    return {"rows": rows, "summary": summarise(rows, list(judges))}


def summarise(rows: list[dict[str, Any]], judges: list[str]) -> dict[str, Any]:
    """Per judge: mean of each mode, mean paired difference, and RAIN's win/tie/loss count."""
    out = {}
    for name in judges:
        vanilla = [row[name]["vanilla"] for row in rows]
        rain = [row[name]["rain"] for row in rows]
        diffs = [r - v for r, v in zip(rain, vanilla, strict=True)]
        out[name] = {
            "vanilla_mean": statistics.fmean(vanilla),
            "rain_mean": statistics.fmean(rain),
            "mean_difference": statistics.fmean(diffs),
            "stderr_difference": (
                statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
            ),
            "wins": sum(d > 1e-9 for d in diffs),
            "ties": sum(abs(d) <= 1e-9 for d in diffs),
            "losses": sum(d < -1e-9 for d in diffs),
            "prompts": len(rows),
        }
    slowdown = sum(r["rain_wall_time"] for r in rows) / sum(r["vanilla_wall_time"] for r in rows)
    return {"judges": out, "rain_vs_vanilla_wall_time": slowdown}


def paired_with(report: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """RAIN here minus RAIN in ``other`` (e.g. K = 8 against K = 1), prompt by prompt.

    Only prompts both runs answered count; per part and judge: the mean paired
    difference, its standard error and how many prompts went each way.
    """
    out: dict[str, Any] = {}
    for part in ("tone", "harm"):
        if part not in report or part not in other:
            continue
        theirs = {row["prompt"]: row for row in other[part]["rows"]}
        rows = [
            (row, theirs[row["prompt"]]) for row in report[part]["rows"] if row["prompt"] in theirs
        ]
        out[part] = {}
        for judge in report[part]["summary"]["judges"]:
            diffs = [mine[judge]["rain"] - base[judge]["rain"] for mine, base in rows]
            out[part][judge] = {
                "prompts": len(diffs),
                "mean_difference": statistics.fmean(diffs) if diffs else 0.0,
                "stderr_difference": (
                    statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
                ),
                "better": sum(d > 1e-9 for d in diffs),
                "same": sum(abs(d) <= 1e-9 for d in diffs),
                "worse": sum(d < -1e-9 for d in diffs),
            }
    return out


def print_report(report: dict[str, Any]) -> None:
    for part in ("tone", "harm"):
        if part not in report:
            continue
        summary = report[part]["summary"]
        rows = [{"judge": name, **values} for name, values in summary["judges"].items()]
        print(
            f"\n{part}: {rows[0]['prompts']} prompts, model {report['model']}, "
            f"preset {report['preset']}, RAIN/vanilla wall time "
            f"{summary['rain_vs_vanilla_wall_time']:.1f}x"
        )
        print(
            table(
                rows,
                [
                    "judge",
                    "vanilla_mean",
                    "rain_mean",
                    "mean_difference",
                    "stderr_difference",
                    "wins",
                    "ties",
                    "losses",
                ],
            )
        )
    for part, judges in report.get("paired", {}).items():
        rows = [{"judge": name, **values} for name, values in judges.items()]
        print(f"\n{part}: RAIN here minus RAIN in --against, prompt by prompt")
        print(
            table(
                rows,
                [
                    "judge",
                    "prompts",
                    "mean_difference",
                    "stderr_difference",
                    "better",
                    "same",
                    "worse",
                ],
            )
        )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("tone", "harm") if p in report]
    fig, axes = plt.subplots(1, len(parts), figsize=(7 * len(parts), 4.5), squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        judges = report[part]["summary"]["judges"]
        names = list(judges)
        x = range(len(names))
        ax.bar(
            [i - 0.2 for i in x],
            [judges[n]["vanilla_mean"] for n in names],
            0.4,
            label="vanilla",
            color="grey",
        )
        ax.bar(
            [i + 0.2 for i in x],
            [judges[n]["rain_mean"] for n in names],
            0.4,
            yerr=[judges[n]["stderr_difference"] for n in names],
            label="RAIN",
            color="tab:blue",
            capsize=4,
        )
        ax.set_xticks(list(x), [n.replace(" (", "\n(") for n in names])
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel("mean score")
        title = "tone: search efficacy" if part == "tone" else "harmful requests"
        ax.set_title(f"{title} ({judges[names[0]]['prompts']} prompts)")
        ax.legend()
    fig.suptitle(
        f"RAIN vs vanilla: {report['model']} on {report['device']}, preset {report['preset']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, quick="the short version (minutes)")
    parser.add_argument("--preset", default="fast", help="RAIN preset (default: fast)")
    parser.add_argument("--leaves", type=int, help="parallel_leaves K (default: the preset's)")
    parser.add_argument("--part", choices=["tone", "harm", "both"], default="both")
    parser.add_argument("--limit", type=int, help="use only the first N prompts of each set")
    parser.add_argument(
        "--against", type=Path, help="an earlier results file: pair RAIN's scores prompt by prompt"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
