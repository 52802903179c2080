"""Markdown tables from saved benchmark results, as pasted into the README and docs.

python -m benchmarks.report                       # benchmarks/results/speed.json, quality.json
python -m benchmarks.report --suffix -quick       # the `make bench` results
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS


def speed_table(report: dict[str, Any]) -> str:
    vanilla = report["modes"]["mean"]["vanilla"]["wall_time"]
    lines = [
        "| mode | tokens | wall s / token | × vanilla | forward calls / token "
        "| tokens processed / token | peak extra memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in {**report["modes"]["mean"], **report["paper"]}.items():
        lines.append(
            f"| {label} | {row['completion_tokens']} | {row['wall_time']:.3f} "
            f"| {row['wall_time'] / vanilla:.1f}× | {row['forward_calls']:.1f} "
            f"| {row['tokens_processed']:.0f} | {row['peak_memory_mb']:.0f} MB |"
        )
    lines += [
        "",
        "| T (paper preset) | wall s / token | forward calls / token | tokens processed / token |",
        "|---|---|---|---|",
    ]
    for row in report["iterations"]:
        lines.append(
            f"| {row['T']} | {row['wall_time']:.2f} | {row['forward_calls']:.1f} "
            f"| {row['tokens_processed']:.0f} |"
        )
    if "prefix" in report:
        lines += [
            "",
            "| tokens before the answer | KV cache | search tokens processed / token "
            "| wall s / token |",
            "|---|---|---|---|",
        ]
        for row in report["prefix"]:
            lines.append(
                f"| {row['prefix_tokens']} | {'shared' if row['kv_cache'] else 're-encode'} "
                f"| {row['search_tokens_processed']:.0f} | {row['wall_time']:.2f} |"
            )
    lines.append("")
    for name, target in report["targets"].items():
        verdict = "met" if target["met"] else "**missed**"
        lines.append(f"- `{name}`: {target['measured']:.2f} (target {target['target']}): {verdict}")
    return "\n".join(lines)


def quality_table(report: dict[str, Any]) -> str:
    lines = []
    for part in ("tone", "harm"):
        if part not in report:
            continue
        summary = report[part]["summary"]
        lines += [
            "",
            f"{part}: RAIN/vanilla wall time {summary['rain_vs_vanilla_wall_time']:.1f}×",
            "",
            "| judge | prompts | vanilla | RAIN | difference (± s.e.) "
            "| RAIN better / same / worse |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in summary["judges"].items():
            lines.append(
                f"| {name} | {s['prompts']} | {s['vanilla_mean']:.3f} | {s['rain_mean']:.3f} "
                f"| {s['mean_difference']:+.3f} ± {s['stderr_difference']:.3f} "
                f"| {s['wins']} / {s['ties']} / {s['losses']} |"
            )
    return "\n".join(lines).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suffix", default="", help="e.g. -quick for the make bench results")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name, render in (("speed", speed_table), ("quality", quality_table)):
        path = args.results / f"{name}{args.suffix}.json"
        if path.exists():
            print(f"<!-- {path.name} -->\n{render(json.loads(path.read_text()))}\n")
        else:
            print(f"({path} not found: run python -m benchmarks.{name})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
