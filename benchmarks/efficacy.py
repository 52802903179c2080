"""Efficacy: does the search still steer when it runs leaves in parallel?

    python -m benchmarks.efficacy                      # one leaf at a time vs the shipped fast
    python -m benchmarks.efficacy --variant k8=parallel_leaves:8 --variant k4=parallel_leaves:4
    python -m benchmarks.efficacy --concurrent 6       # decisions only: searches share calls
    python -m benchmarks.efficacy --preset paper --skip shipped --variant k16=parallel_leaves:16

Every case (``data/banned_words.yaml``) bans the words a plain answer would use; the
search's judge scores -1 when one appears and +1 otherwise, so the judge alone defines
success and a case is won when the answer keeps every banned word out. Each variant is
the ``fast`` preset (or ``--preset``) with a few fields changed (``k1``: one leaf at a
time, the reference; ``shipped``: the preset as it ships). Reported per variant and case class:

- ``avoided``: cases whose answer has no banned word (vanilla greedy beside it);
- ``same_as_k1``: answers identical to the one-leaf-at-a-time answer;
- ``judge_led``: share of commits whose child had the best value among the root's
  visited children (the commit follows the judge, not the visits handed out by prior);
- ``committed_value``: mean value of the committed children; ``dead_ends``: steps where
  every visited child scored below zero; ``clear_misses``: steps that committed a child
  valued -0.5 or below while a visited sibling had +0.5 or above (``all_tried``: of them,
  those where every child had been visited);
- costs per committed token: forward calls (sequential calls, the GPU proxy), wall
  time against vanilla measured in the same run (only with ``--concurrent 1``).

Results go to ``benchmarks/results/efficacy[-quick].json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import DATA, bench_parser, load, machine, now, table, write_json
from rain_search import RainConfig, RainGenerator, RainResult
from rain_search.evaluators import FunctionEvaluator
from rain_search.spec import avoid_words

BASELINE = "k1"
DEFAULT_VARIANTS = {BASELINE: {"parallel_leaves": 1}, "shipped": {}}


def load_cases(path: Path = DATA / "banned_words.yaml") -> list[dict[str, Any]]:
    """The cases, each with its class, prompt and lower-cased banned words."""
    cases = yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]
    for case in cases:
        case["banned"] = [str(word).lower() for word in case["banned"]]
    return cases


def mentions(text: str, banned: Sequence[str]) -> list[str]:
    """The banned words that occur in ``text`` (case-insensitive substrings)."""
    lowered = text.lower()
    return [word for word in banned if word in lowered]


class BannedWordJudge:
    """The search's judge: the ``avoid:`` keyword judge of each case's prompt."""

    def __init__(self, cases: Sequence[dict[str, Any]]) -> None:
        self.judges = {case["prompt"]: avoid_words(case["banned"]) for case in cases}

    def __call__(self, prompt: str, text: str) -> float:
        return self.judges[prompt](text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = load_cases()[: args.limit]
    model, tokenizer = load(args.model, args.device)
    judge = FunctionEvaluator(BannedWordJudge(cases), name="banned words", takes_prompt=True)
    generator = RainGenerator(model, tokenizer, args.preset, evaluator=judge)
    generator.warm_up()
    variants = {**DEFAULT_VARIANTS, **dict(args.variant)}
    for name in args.skip:
        variants.pop(name, None)
    report: dict[str, Any] = {
        "machine": machine(),
        "model": args.model or "embedded SmolLM2-135M-Instruct",
        "device": str(model.device),
        "dtype": str(model.dtype),
        "preset": args.preset,
        "max_new_tokens": args.tokens,
        "concurrent": args.concurrent,
        "variants": {name: overrides for name, overrides in variants.items()},
        "started": now(),
        "note": args.note,
    }
    earlier = None if BASELINE in variants else earlier_baseline(args.baseline, cases)
    vanilla = [generator.vanilla(c["prompt"], max_new_tokens=args.tokens) for c in cases]
    results: dict[str, list[RainResult]] = {}
    paired: dict[str, list[RainResult]] = {}
    for name, overrides in variants.items():
        config = RainConfig.preset(args.preset, max_new_tokens=args.tokens, seed=0, **overrides)
        started = now()
        results[name], paired[name] = run_variant(generator, cases, config, args.concurrent)
        print(f"[{started} -> {now()}] {name}: {config.parallel_leaves} leaves", flush=True)
    report["cases"] = case_rows(cases, vanilla, results)
    baseline = earlier or [result.text for result in results[BASELINE]]
    report["summary"] = {
        name: summarise(cases, vanilla, runs, baseline, paired[name])
        for name, runs in results.items()
    }
    report["finished"] = now()
    name = "efficacy" + (f"-{args.name}" if args.name else "")
    path = write_json(name, report, args.out)
    print_report(report)
    print(f"\nwrote {path}")
    return 0


def run_variant(
    generator: RainGenerator, cases: list[dict[str, Any]], config: RainConfig, concurrent: int
) -> tuple[list[RainResult], list[RainResult]]:
    """Every case under ``config``: one after another (timed), or ``concurrent`` at a time.

    One after another, each answer comes with the vanilla run right before it
    (its wall-time pair); at once there are no pairs, the times being shared.
    """
    prompts = [case["prompt"] for case in cases]

    def answer(prompt: str) -> RainResult:
        result = generator.generate(prompt, config=config)
        print(f"  [{now()}] {prompt[:40]!r}: {result.text[:70]!r}", flush=True)
        return result

    if concurrent > 1:
        with ThreadPoolExecutor(concurrent) as pool:
            return list(pool.map(answer, prompts)), []
    runs, pairs = [], []
    for prompt in prompts:
        pairs.append(generator.vanilla(prompt, max_new_tokens=config.max_new_tokens))
        runs.append(answer(prompt))
    return runs, pairs


def earlier_baseline(path: Path | None, cases: list[dict[str, Any]]) -> list[str]:
    """One-leaf-at-a-time answers from an earlier results file, checked before any run."""
    if path is None:
        raise SystemExit(f"--skip {BASELINE} needs --baseline RESULTS.json from an earlier run")
    rows = {row["prompt"]: row for row in json.loads(path.read_text(encoding="utf-8"))["cases"]}
    missing = [c["prompt"] for c in cases if BASELINE not in rows.get(c["prompt"], {})]
    if missing:
        raise SystemExit(
            f"--baseline {path} has no {BASELINE} answer for {len(missing)} case(s), e.g. "
            f"{missing[0]!r}: pass a results file of a run that included {BASELINE}"
        )
    return [rows[case["prompt"]][BASELINE]["text"] for case in cases]


def judge_led(result: RainResult) -> list[bool]:
    """Per step: did the committed child have the best value of the visited children?"""
    out = []
    for step in result.steps:
        visited = [c for c in step.candidates if c.real_visits > 0]
        chosen = [c for c in step.candidates if c.chosen]
        if len(visited) > 1 and chosen:
            out.append(chosen[0].value >= max(c.value for c in visited) - 1e-9)
    return out


def clear_misses(result: RainResult) -> list[bool]:
    """Per step that committed a child at <= -0.5 beside a visited sibling at >= +0.5:
    had every child been visited?"""
    out = []
    for step in result.steps:
        chosen = [c for c in step.candidates if c.chosen]
        liked = [c for c in step.candidates if c.real_visits > 0 and c.value >= 0.5]
        if chosen and chosen[0].value <= -0.5 and liked:
            out.append(all(c.real_visits > 0 for c in step.candidates))
    return out


def dead_ends(result: RainResult) -> int:
    return sum(
        all(c.value < 0 for c in step.candidates if c.real_visits > 0) for step in result.steps
    )


def summarise(
    cases: list[dict[str, Any]],
    vanilla: list[RainResult],
    runs: list[RainResult],
    baseline: list[str],
    pairs: list[RainResult],
) -> dict[str, Any]:
    """Per class and overall: wins, agreement with one leaf at a time, costs."""
    classes = sorted({case["class"] for case in cases})
    out: dict[str, Any] = {}
    for group in [*classes, "all"]:
        picked = [i for i, c in enumerate(cases) if group in ("all", c["class"])]
        rows = [runs[i] for i in picked]
        led = [flag for r in rows for flag in judge_led(r)]
        values = [step.value for r in rows for step in r.steps]
        tokens = sum(max(r.completion_tokens, 1) for r in rows)
        summary: dict[str, Any] = {
            "cases": len(picked),
            "avoided": sum(not mentions(runs[i].text, cases[i]["banned"]) for i in picked),
            "vanilla_avoided": sum(
                not mentions(vanilla[i].text, cases[i]["banned"]) for i in picked
            ),
            "same_as_k1": sum(runs[i].text == baseline[i] for i in picked),
            "judge_led": sum(led) / len(led) if led else 1.0,
            "committed_value": statistics.fmean(values) if values else 0.0,
            "dead_ends": sum(dead_ends(r) for r in rows),
            "clear_misses": sum(len(clear_misses(r)) for r in rows),
            "clear_misses_all_tried": sum(sum(clear_misses(r)) for r in rows),
            "steps": sum(len(r.steps) for r in rows),
            "forward_calls_per_token": sum(r.totals.forward_calls for r in rows) / tokens,
            "iterations_per_token": sum(r.stats["iterations"] for r in rows) / tokens,
        }
        if pairs:  # each answer against the vanilla run right before it
            bases = [pairs[i] for i in picked]
            rain_wall = sum(r.wall_time for r in rows) / tokens
            base_tokens = sum(max(p.completion_tokens, 1) for p in bases)
            base_wall = sum(p.wall_time for p in bases) / base_tokens
            summary["wall_vs_vanilla_per_token"] = rain_wall / base_wall
        out[group] = summary
    return out


def case_rows(
    cases: list[dict[str, Any]], vanilla: list[RainResult], results: dict[str, list[RainResult]]
) -> list[dict[str, Any]]:
    rows = []
    for i, case in enumerate(cases):
        row: dict[str, Any] = {**case, "vanilla": vanilla[i].text}
        for name, runs in results.items():
            result = runs[i]
            row[name] = {
                "text": result.text,
                "banned_used": mentions(result.text, case["banned"]),
                "completion_tokens": result.completion_tokens,
                "forward_calls": result.totals.forward_calls,
                "wall_time": result.wall_time,
                "judge_led": judge_led(result),
                "commits": [
                    {"text": s.text, "visits": s.visits, "value": s.value, "early": s.early_stopped}
                    for s in result.steps
                ],
            }
        rows.append(row)
    return rows


def print_report(report: dict[str, Any]) -> None:
    columns = [
        "variant",
        "class",
        "cases",
        "avoided",
        "vanilla_avoided",
        "same_as_k1",
        "judge_led",
        "committed_value",
        "dead_ends",
        "clear_misses",
        "forward_calls_per_token",
        "wall_vs_vanilla_per_token",
    ]
    rows = [
        {"variant": name, "class": group, **values}
        for name, summary in report["summary"].items()
        for group, values in summary.items()
    ]
    print(f"\nbanned-word efficacy, {report['max_new_tokens']} tokens, model {report['model']}:")
    print(table(rows, columns))


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=field:value,field:value`` (values read as YAML) -> (NAME, overrides)."""
    name, _, fields = text.partition("=")
    if not name or not fields:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: write NAME=field:value[,field:value], e.g. k4=parallel_leaves:4"
        )
    overrides = {}
    for item in fields.split(","):
        key, _, value = item.partition(":")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--tokens", type=int, default=32, help="max_new_tokens per answer")
    parser.add_argument(
        "--preset", default="fast", help="the preset every variant changes (default: fast)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases")
    parser.add_argument(
        "--variant", type=parse_variant, action="append", default=[], help="NAME=field:value,..."
    )
    parser.add_argument(
        "--concurrent", type=int, default=1, help="searches at once (1: timed, one after another)"
    )
    parser.add_argument(
        "--skip", action="append", default=[], help="leave out a default variant (k1, shipped)"
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, help="results file whose k1 answers to compare with"
    )
    parser.add_argument("--name", default="", help="suffix of the results file")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    return parser.parse_args(argv)


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"took {time.perf_counter() - started:.0f} s")
    raise SystemExit(code)
