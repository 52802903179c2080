"""The batched engine: parallel leaves, shared calls across searches, and dtype.

    python -m benchmarks.engine                     # all sections, embedded model, CPU
    python -m benchmarks.engine --quick             # shorter answers, fewer K
    python -m benchmarks.engine --sections leaves --dtype bfloat16
    python -m benchmarks.engine --model random:7b --device cuda --sections concurrent paper

Every ratio is RAIN against vanilla decoding measured in the same run, same
model, same dtype. Sections:

- ``leaves``: the ``fast`` preset with the function judge at K = 1, 2, 4, 8, 16
  parallel leaves: wall time and forward calls per committed token.
- ``paper``: the ``paper`` preset, self-judged, at K = 1, 8, 16, 32.
- ``concurrent``: 8 searches one after another vs the same 8 at once on one
  generator: throughput and whether every answer equals its solo answer.
- ``dtype``: vanilla and ``fast`` RAIN in float32 and bfloat16 (same run).

Results go to ``benchmarks/results/engine[-quick][-model].json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, load, machine, now, read_lines, table, write_json
from benchmarks.judges import tone
from rain_search import RainConfig, RainGenerator, RainResult

SECTIONS = ("leaves", "paper", "concurrent", "dtype")
FULL = {
    "prompts": 2,
    "tokens": 40,
    "paper_tokens": 12,
    "leaves": [1, 2, 4, 8, 16],
    "paper_leaves": [1, 8, 16, 32],
    "concurrent": 8,
    "concurrent_tokens": 24,
}
QUICK = {
    "prompts": 1,
    "tokens": 24,
    "paper_tokens": 6,
    "leaves": [1, 4, 8, 16],
    "paper_leaves": [1, 8],
    "concurrent": 8,
    "concurrent_tokens": 12,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    prompts = read_lines("speed_prompts.txt")[: sizes["prompts"]]
    model, tokenizer = load(args.model, args.device)
    if args.dtype:
        model = model.to(getattr(torch, args.dtype))
    report: dict[str, Any] = {
        "machine": machine(),
        "model": args.model or "embedded SmolLM2-135M-Instruct",
        "device": str(model.device),
        "dtype": str(model.dtype),
        "sizes": sizes,
        "max_batch_rows": args.max_batch_rows,
        "started": now(),
    }
    function = RainGenerator(
        model, tokenizer, "fast", evaluator=tone, max_batch_rows=args.max_batch_rows
    )
    function.warm_up()
    if "leaves" in args.sections:
        report["leaves"] = sweep(function, prompts, "fast", sizes["tokens"], sizes["leaves"])
    if "paper" in args.sections:
        judged = RainGenerator(model, tokenizer, "paper")
        judged.warm_up()
        report["paper"] = sweep(
            judged, prompts[:1], "paper", sizes["paper_tokens"], sizes["paper_leaves"]
        )
    if "concurrent" in args.sections:
        report["concurrent"] = concurrency(function, prompts[0], sizes, args.leaves)
    if "dtype" in args.sections:
        report["dtypes"] = compare_dtypes(args.model, args.device, prompts, sizes, args.leaves)
    name = "engine" + ("-quick" if args.quick else "")
    if args.model:
        name += "-" + args.model.replace(":", "-").replace("/", "-")
    path = write_json(name, report, args.out)
    print_report(report)
    print(f"\nwrote {path}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default=None, help="model id/path, or random:<shape>")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="cast the model, e.g. bfloat16")
    parser.add_argument("--leaves", type=int, default=8, help="K for concurrent and dtype")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--max-batch-rows", type=int, default=None, help="the engine's batch budget in rows"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def per_token(result: RainResult) -> dict[str, float]:
    tokens = max(result.completion_tokens, 1)
    return {
        "completion_tokens": result.completion_tokens,
        "wall_time": result.wall_time / tokens,
        "forward_calls": result.totals.forward_calls / tokens,
        "tokens_processed": result.totals.tokens_processed / tokens,
        "iterations": result.stats["iterations"] / tokens,
    }


def vanilla(generator: RainGenerator, prompts: list[str], tokens: int) -> float:
    """Vanilla wall seconds per token over ``prompts`` (same budget as the searches)."""
    results = [generator.vanilla(p, max_new_tokens=tokens) for p in prompts]
    return sum(r.wall_time for r in results) / max(sum(r.completion_tokens for r in results), 1)


def sweep(
    generator: RainGenerator, prompts: list[str], preset: str, tokens: int, ks: list[int]
) -> list[dict[str, Any]]:
    """``preset`` at each K, against vanilla measured right before it."""
    rows = []
    for leaves in ks:
        base = vanilla(generator, prompts, tokens)
        config = RainConfig.preset(preset, max_new_tokens=tokens, seed=0, parallel_leaves=leaves)
        results = [generator.generate(p, config=config) for p in prompts]
        row = {"K": leaves, **mean([per_token(r) for r in results]), "vanilla_wall": base}
        row["wall_vs_vanilla"] = row["wall_time"] / base
        rows.append(row)
        print(
            f"[{now()}] {preset} K={leaves}: {row['wall_vs_vanilla']:.2f}x vanilla, "
            f"{row['forward_calls']:.2f} calls/token",
            flush=True,
        )
    return rows


def concurrency(
    generator: RainGenerator, prompt: str, sizes: dict[str, Any], leaves: int
) -> dict[str, Any]:
    """N searches (seeds 0..N-1) one after another, then all at once on one generator."""
    count = sizes["concurrent"]
    config = RainConfig.preset(
        "fast", max_new_tokens=sizes["concurrent_tokens"], parallel_leaves=leaves
    )
    # Both runs start with cold judge and embedder caches: the second run would otherwise
    # find the texts the first judged and embedded (same prompt, same seeds), and look faster.
    cold(generator)
    start = time.perf_counter()
    solo = [generator.generate(prompt, config=config, seed=seed) for seed in range(count)]
    sequential = time.perf_counter() - start
    cold(generator)
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        together = list(
            pool.map(lambda s: generator.generate(prompt, config=config, seed=s), range(count))
        )
    concurrent = time.perf_counter() - start
    tokens = sum(r.completion_tokens for r in together)
    same = sum(a.token_ids == b.token_ids for a, b in zip(solo, together, strict=True))
    out = {
        "searches": count,
        "K": leaves,
        "sequential_s": sequential,
        "concurrent_s": concurrent,
        "throughput_gain": sequential / concurrent,
        "tokens_per_s_sequential": sum(r.completion_tokens for r in solo) / sequential,
        "tokens_per_s_concurrent": tokens / concurrent,
        "same_answers": f"{same}/{count}",
    }
    print(
        f"[{now()}] {count} concurrent searches: {out['throughput_gain']:.2f}x throughput, "
        f"same answers {same}/{count}",
        flush=True,
    )
    return out


def cold(generator: RainGenerator) -> None:
    """Empty the generator's judge and embedder caches."""
    for part in (generator.evaluator, generator.embedder):
        clear = getattr(part, "clear_cache", None)
        if clear is not None:
            clear()


def compare_dtypes(
    model_name: str | None,
    device: str | None,
    prompts: list[str],
    sizes: dict[str, Any],
    leaves: int,
) -> list[dict[str, Any]]:
    """Vanilla and fast RAIN in float32 then bfloat16, ratios within each dtype."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        model, tokenizer = load(model_name, device)
        model = model.to(dtype)
        generator = RainGenerator(model, tokenizer, "fast", evaluator=tone)
        generator.warm_up()
        base = vanilla(generator, prompts, sizes["tokens"])
        config = RainConfig.preset(
            "fast", max_new_tokens=sizes["tokens"], seed=0, parallel_leaves=leaves
        )
        results = [generator.generate(p, config=config) for p in prompts]
        sample = generator.vanilla(prompts[0], max_new_tokens=24).text
        row = {
            "dtype": str(dtype).removeprefix("torch."),
            "K": leaves,
            "vanilla_wall": base,
            **mean([per_token(r) for r in results]),
            "vanilla_sample": sample,
        }
        row["wall_vs_vanilla"] = row["wall_time"] / base
        rows.append(row)
        print(
            f"[{now()}] {row['dtype']}: vanilla {base * 1000:.1f} ms/token, RAIN fast K={leaves} "
            f"{row['wall_vs_vanilla']:.2f}x; vanilla says {sample!r}",
            flush=True,
        )
    return rows


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means weighted by committed tokens."""
    tokens = sum(row["completion_tokens"] for row in rows) or 1
    return {
        "completion_tokens": tokens,
        **{
            k: sum(r[k] * r["completion_tokens"] for r in rows) / tokens
            for k in rows[0]
            if k != "completion_tokens"
        },
    }


def print_report(report: dict[str, Any]) -> None:
    columns = ["K", "wall_vs_vanilla", "forward_calls", "tokens_processed", "iterations"]
    if "leaves" in report:
        print(f"\nfast preset, function judge ({report['dtype']}):")
        print(table(report["leaves"], columns))
    if "paper" in report:
        print(f"\npaper preset, self-judge ({report['dtype']}):")
        print(table(report["paper"], columns))
    if "concurrent" in report:
        print("\nconcurrent searches:")
        print(table([report["concurrent"]], list(report["concurrent"])))
    if "dtypes" in report:
        print("\ndtype:")
        print(
            table(report["dtypes"], ["dtype", "vanilla_wall", "wall_vs_vanilla", "forward_calls"])
        )


if __name__ == "__main__":
    raise SystemExit(main())
