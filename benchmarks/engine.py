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
- ``scale``: ``fast`` searches with the function judge at 1, 8, 32, 64 at once
  (seeds 0..N-1, one prompt): committed tokens/s beside plain batched decoding
  (``model.generate``, greedy) on as many rows; whether each concurrent answer
  is its solo answer (the first 8 seeds run one at a time); torch operations
  dispatched per committed token at 8 and 64 searches (by default on the tiny
  random Llama on the CPU, ``embedder="hidden"``: a count, the same on every
  machine; ``--ops-model`` picks another); and where the largest run's time
  goes (forward calls, judge, embedder, and the rest: the engine's host work).
  On a CPU the throughput rows stop at 8 searches (``--searches`` overrides).
- ``host``: the engine's own work where the model costs nothing (``random:tiny-chars``
  on the CPU, 64 searches): milliseconds per engine turn and the full garbage
  collections in them, with the loaded heap as is and frozen — a stand-in, on any
  machine, for the host time that bounds a GPU.

Results go to ``benchmarks/results/engine[-quick][-model].json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from benchmarks.common import bench_parser, load, machine, now, read_lines, table, write_json
from benchmarks.judges import tone
from benchmarks.opcount import OpCounter, TimeSplit, plain_batched, run_searches
from rain_search import RainConfig, RainGenerator, RainResult
from rain_search.heap import freeze_loaded_heap

SECTIONS = ("leaves", "paper", "concurrent", "dtype", "scale", "host")
SPLIT_PARTS = (*(name for name, _, _ in TimeSplit.PARTS), "host")  # TimeSplit.report's
FULL: dict[str, Any] = {
    "prompts": 2,
    "tokens": 40,
    "paper_tokens": 12,
    "leaves": [1, 2, 4, 8, 16],
    "paper_leaves": [1, 8, 16, 32],
    "concurrent": 8,
    "concurrent_tokens": 24,
    "scale": [1, 8, 32, 64],
    "scale_cpu": [1, 8],
    "scale_tokens": 16,
    "scale_tokens_cpu": 8,
    "scale_solo": 8,
    "ops": [8, 64],
    "ops_tokens": 16,
    "host_searches": 64,
    "host_tokens": 16,
}
QUICK: dict[str, Any] = {
    "prompts": 1,
    "tokens": 24,
    "paper_tokens": 6,
    "leaves": [1, 4, 8, 16],
    "paper_leaves": [1, 8],
    "concurrent": 8,
    "concurrent_tokens": 12,
    "scale": [1, 8, 32, 64],
    "scale_cpu": [1, 8],
    "scale_tokens": 8,
    "scale_tokens_cpu": 4,
    "scale_solo": 8,
    "ops": [8, 64],
    "ops_tokens": 8,
    "host_searches": 32,
    "host_tokens": 8,
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
    # batch invariance only when asked: the keyword is newer than this benchmark
    invariant = {"batch_invariant": True} if args.batch_invariant else {}
    report["batch_invariant"] = args.batch_invariant
    function = RainGenerator(
        model, tokenizer, "fast", evaluator=tone, max_batch_rows=args.max_batch_rows, **invariant
    )
    function.warm_up()
    if args.freeze_heap:
        freeze_loaded_heap()
    report["freeze_heap"] = args.freeze_heap
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
    if "scale" in args.sections:
        report["scale"] = scale(
            function,
            scale_ops_generator(args.ops_model, function),
            prompts[0],
            sizes,
            args.searches,
        )
    if "host" in args.sections:
        report["host"] = host_work(prompts[0], sizes)
    name = "engine" + ("-quick" if args.quick else "")
    if args.model:
        name += "-" + args.model.replace(":", "-").replace("/", "-")
    path = write_json(name, report, args.out)
    print_report(report)
    print(f"\nwrote {path}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        __doc__, model="model id/path, or random:<shape>", quick="the short version"
    )
    parser.add_argument("--dtype", default=None, help="cast the model, e.g. bfloat16")
    parser.add_argument("--leaves", type=int, default=8, help="K for concurrent and dtype")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--max-batch-rows", type=int, default=None, help="the engine's batch budget in rows"
    )
    parser.add_argument(
        "--searches", type=int, nargs="+", default=None, help="scale: concurrent searches"
    )
    parser.add_argument(
        "--ops-model",
        default="random:tiny",
        help="scale: the model whose torch operations are counted (on the CPU, "
        "embedder='hidden'); 'same' for the run's generator, 'none' to skip",
    )
    parser.add_argument(
        "--batch-invariant",
        action="store_true",
        help="each search in calls of its own shapes (leaves, concurrent and scale sections)",
    )
    parser.add_argument(
        "--freeze-heap",
        action="store_true",
        help="freeze the loaded heap out of full garbage collections after warm-up, as the "
        "serving processes do (rain_search/heap.py)",
    )
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
    # On a CPU the legs are also split (forward calls, judge, embedder, the rest): the
    # wrappers cost nothing there, and the forward calls' own ratio bounds the gain.
    split = generator.model.device.type == "cpu"
    cold(generator)
    with timed_parts(generator, split) as one_by_one:
        start = time.perf_counter()
        solo = [generator.generate(prompt, config=config, seed=seed) for seed in range(count)]
        sequential = time.perf_counter() - start
    cold(generator)
    with timed_parts(generator, split) as at_once:
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
    if split:
        assert one_by_one is not None and at_once is not None
        out["split_sequential"] = one_by_one.report(sequential)
        out["split_concurrent"] = at_once.report(concurrent)
        out["forward_gain"] = one_by_one.seconds["forward"] / at_once.seconds["forward"]
    bound = f" (forward calls alone {out['forward_gain']:.2f}x)" if split else ""
    print(
        f"[{now()}] {count} concurrent searches: {out['throughput_gain']:.2f}x throughput"
        f"{bound}, same answers {same}/{count}",
        flush=True,
    )
    return out


@contextlib.contextmanager
def timed_parts(generator: RainGenerator, split: bool) -> Iterator[TimeSplit | None]:
    """The generator's time split while the block runs (None when not ``split``)."""
    if not split:
        yield None
        return
    with TimeSplit(generator).measure() as parts:
        yield parts


def cold(generator: RainGenerator) -> None:
    """Empty the generator's judge and embedder caches."""
    for part in (generator.evaluator, generator.embedder):
        clear = getattr(part, "clear_cache", None)
        if clear is not None:
            clear()


def scale(
    generator: RainGenerator,
    ops_generator: RainGenerator | None,
    prompt: str,
    sizes: dict[str, Any],
    searches: list[int] | None = None,
) -> dict[str, Any]:
    """Throughput, answers, operations and time split as concurrent searches grow."""
    started = time.perf_counter()
    cpu = generator.model.device.type == "cpu"
    counts = searches or sizes["scale_cpu" if cpu else "scale"]
    tokens = sizes["scale_tokens_cpu" if cpu else "scale_tokens"]
    config = RainConfig.preset("fast", max_new_tokens=tokens)
    prompt_ids, _ = generator.encode(prompt, None)
    pad = generator.tokenizer.pad_token_id
    pad = generator.tokenizer.eos_token_id if pad is None else pad

    # the first seeds one at a time: the solo answers, and the throughput of one search
    solo_count = min(sizes["scale_solo"], max(counts))
    cold(generator)
    start = time.perf_counter()
    solo = [run_searches(generator, [prompt], [seed], config)[0] for seed in range(solo_count)]
    solo_wall = time.perf_counter() - start
    rows = []
    split: dict[str, Any] | None = None
    for count in counts:
        if count == 1:
            results, wall = solo, solo_wall
        elif cpu and count == max(counts):
            # the wrappers cost a CPU nothing: split this run (on a GPU they synchronise the
            # device, so the split has a run of its own, below)
            results, split = split_run(generator, prompt, count, config)
            wall = split["wall_s"]
        else:
            cold(generator)
            start = time.perf_counter()
            results = run_searches(generator, [prompt] * count, list(range(count)), config)
            wall = time.perf_counter() - start
        committed = sum(r.completion_tokens for r in results)
        plain = plain_batched(generator.model, [prompt_ids] * count, tokens, pad)
        row: dict[str, Any] = {
            "searches": count,
            "tokens": committed,
            "wall_s": wall,
            "tokens_per_s": committed / wall,
            "forward_calls_per_token": sum(r.totals.forward_calls for r in results)
            / max(committed, 1),
            "plain_tokens_per_s": plain["tokens_per_s"],
        }
        row["vs_plain"] = row["tokens_per_s"] / row["plain_tokens_per_s"]
        if count > 1:
            compared = list(zip(solo, results, strict=False))
            same = sum(a.token_ids == b.token_ids for a, b in compared)
            row["same_answers"] = f"{same}/{len(compared)}"
        rows.append(row)
        print(
            f"[{now()}] scale {count} searches: {row['tokens_per_s']:.1f} tokens/s "
            f"(plain {row['plain_tokens_per_s']:.1f}), same answers {row.get('same_answers', '-')}",
            flush=True,
        )
    for row in rows:
        row["vs_one"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
    if split is not None:
        split["separate_run"] = False
    else:
        split = split_run(generator, prompt, max(counts), config)[1]
        split["separate_run"] = True
    out: dict[str, Any] = {
        "prompt": prompt,
        "K": config.parallel_leaves,
        "max_new_tokens": tokens,
        "rows": rows,
        "split": split,
    }
    if ops_generator is not None:
        out["operations"] = operations(ops_generator, prompt, sizes["ops"], sizes["ops_tokens"])
    out["targets"] = scale_targets(out, generator.model.device.type)
    out["section_s"] = time.perf_counter() - started
    return out


def scale_ops_generator(name: str, generator: RainGenerator) -> RainGenerator | None:
    """Whose operations ``scale`` counts: a model on the CPU with the hidden-state embedder."""
    if name == "none":
        return None
    if name == "same":
        return generator
    model, tokenizer = load(name, "cpu")
    # every search admitted at once (64 fast searches hold ~3,100 rows): the count is about
    # sharing calls, and the CPU's default budget (320 rows) would run them ~6 at a time
    counted = RainGenerator(
        model, tokenizer, "fast", evaluator=tone, embedder="hidden", max_batch_rows=4096
    )
    counted.warm_up()
    return counted


def operations(
    generator: RainGenerator, prompt: str, counts: list[int], tokens: int
) -> dict[str, Any]:
    """torch (aten) operations dispatched per committed token, N searches at once."""
    config = RainConfig.preset("fast", max_new_tokens=tokens)
    rows = []
    for count in counts:
        cold(generator)
        start = time.perf_counter()
        with OpCounter() as ops:
            results = run_searches(generator, [prompt] * count, list(range(count)), config)
        committed = max(sum(r.completion_tokens for r in results), 1)
        rows.append(
            {
                "searches": count,
                "tokens": committed,
                "operations": ops.total,
                "per_token": ops.total / committed,
                "forward_calls_per_token": sum(r.totals.forward_calls for r in results) / committed,
                "wall_s": time.perf_counter() - start,
                "top": {name: n / committed for name, n in ops.top().items()},
            }
        )
        print(
            f"[{now()}] operations, {count} searches: {rows[-1]['per_token']:.0f} per token",
            flush=True,
        )
    out: dict[str, Any] = {
        "model": getattr(generator.model.config, "_name_or_path", "") or "random",
        "layers": generator.model.config.num_hidden_layers,
        "device": str(generator.model.device),
        "embedder": type(generator.embedder).__name__,
        "max_new_tokens": tokens,
        "rows": rows,
    }
    if len(rows) > 1:
        out["ratio"] = rows[-1]["per_token"] / rows[0]["per_token"]
    return out


def split_run(
    generator: RainGenerator, prompt: str, count: int, config: RainConfig
) -> tuple[list[RainResult], dict[str, Any]]:
    """``count`` searches, and where their wall time went: forward, judge, embed, the rest."""
    split = TimeSplit(generator)
    cold(generator)
    start = time.perf_counter()
    with split.measure():
        results = run_searches(generator, [prompt] * count, list(range(count)), config)
    wall = time.perf_counter() - start
    committed = sum(r.completion_tokens for r in results)
    out = {"searches": count, "tokens": committed, "tokens_per_s": committed / wall}
    out |= split.report(wall)
    print(
        f"[{now()}] split, {count} searches: forward {out['forward_share']:.0%}, judge "
        f"{out['judge_share']:.0%}, embed {out['embed_share']:.0%}, host {out['host_share']:.0%}",
        flush=True,
    )
    return results, out


def host_work(prompt: str, sizes: dict[str, Any]) -> dict[str, Any]:
    """The engine's own work at many searches, where the model costs next to nothing.

    On a GPU a call's kernels take a few ms and what bounds throughput is the host:
    Python per turn and per row, and the garbage collector. This section measures that
    on any machine: ``random:tiny-chars`` (a 2-layer Llama with a character vocabulary)
    on the CPU, ``fast`` with the tone judge and the hidden-state embedder, N searches
    at once on this thread; wall time per engine turn and the full garbage collections
    in it, with the loaded heap as a library call has it and then frozen, as the serving
    processes have it (``rain_search/heap.py``).
    """
    model, tokenizer = load("random:tiny-chars", "cpu")
    generator = RainGenerator(
        model,
        tokenizer,
        "fast",
        evaluator=tone,
        embedder="hidden",
        max_batch_rows=1 << 20,
        max_batch_kv_tokens=1 << 30,
    )
    config = RainConfig.preset("fast", max_new_tokens=sizes["host_tokens"])
    count = sizes["host_searches"]
    prompts = [f"{prompt} ({number})" for number in range(count)]
    run_searches(generator, prompts, list(range(count)), config)  # warm: first touches
    gc.unfreeze()  # the first leg is the heap as loaded, even after --freeze-heap
    rows, answers = [], []
    try:
        for frozen in (False, True):
            if frozen:
                freeze_loaded_heap()
            cold(generator)
            with full_collections() as passes, TimeSplit(generator).measure() as parts:
                start = time.perf_counter()
                results = run_searches(generator, prompts, list(range(count)), config)
                wall = time.perf_counter() - start
            turns = parts.calls["forward"]
            row = {
                "heap": "frozen" if frozen else "as loaded",
                "searches": count,
                "tokens": sum(r.completion_tokens for r in results),
                "wall_s": wall,
                "turns": turns,
                "ms_per_turn": 1000 * wall / max(turns, 1),
                "full_gc_passes": passes["count"],
                "full_gc_s": passes["seconds"],
                "forward_s": parts.seconds["forward"],
            }
            rows.append(row)
            answers.append([r.token_ids for r in results])
            print(
                f"[{now()}] host work, heap {row['heap']}: {row['ms_per_turn']:.1f} ms a turn, "
                f"{row['full_gc_passes']} full collections {row['full_gc_s']:.2f} s of "
                f"{wall:.2f} s",
                flush=True,
            )
    finally:
        gc.unfreeze()
    return {"rows": rows, "same_answers": answers[0] == answers[1]}


@contextlib.contextmanager
def full_collections() -> Iterator[dict[str, float]]:
    """How many full (oldest-generation) garbage collections ran in the block, and their time."""
    seen: dict[str, float] = {"count": 0, "seconds": 0.0}
    started: list[float] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            seen["count"] += 1
            seen["seconds"] += time.perf_counter() - started.pop()

    gc.callbacks.append(watch)
    try:
        yield seen
    finally:
        gc.callbacks.remove(watch)


def scale_targets(out: dict[str, Any], device: str) -> dict[str, dict[str, Any]]:
    """Issue 30's targets, for what this run measured."""
    goals: dict[str, dict[str, Any]] = {}
    if "ratio" in out.get("operations", {}):
        ratio = out["operations"]["ratio"]
        rows = out["operations"]["rows"]
        name = f"ops_per_token_{rows[-1]['searches']}_vs_{rows[0]['searches']}"
        goals[name] = {"measured": ratio, "target": "<= 0.25", "met": ratio <= 0.25}
    by_count = {row["searches"]: row for row in out["rows"]}
    if device == "cuda" and 64 in by_count:
        speed = by_count[64]["tokens_per_s"]
        goals["tokens_per_s_64"] = {"measured": speed, "target": ">= 700", "met": speed >= 700}
    if 8 in by_count and 64 in by_count:
        gain = by_count[64]["tokens_per_s"] / by_count[8]["tokens_per_s"]
        goals["throughput_64_vs_8"] = {"measured": gain, "target": ">= 5", "met": gain >= 5}
    for row in out["rows"]:
        if "same_answers" in row:
            same, total = map(int, row["same_answers"].split("/"))
            goals[f"same_answers_{row['searches']}"] = {
                "measured": row["same_answers"],
                "target": f"{total}/{total}",
                "met": same == total,
            }
    return goals


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
        row = report["concurrent"]
        print(table([row], [key for key, value in row.items() if not isinstance(value, dict)]))
        for leg in ("sequential", "concurrent"):
            if f"split_{leg}" in row:
                parts = row[f"split_{leg}"]
                print(
                    f"  {leg}: "
                    + ", ".join(f"{name} {parts[f'{name}_s']:.1f} s" for name in SPLIT_PARTS)
                )
    if "host" in report:
        print("\nhost work (random:tiny-chars on the CPU, fast, tone judge):")
        print(table(report["host"]["rows"], list(report["host"]["rows"][0])))
    if "dtypes" in report:
        print("\ndtype:")
        print(
            table(report["dtypes"], ["dtype", "vanilla_wall", "wall_vs_vanilla", "forward_calls"])
        )
    if "scale" in report:
        invariant = ", batch invariant" if report.get("batch_invariant") else ""
        print_scale(report["scale"], report["dtype"] + invariant)


def print_scale(part: dict[str, Any], dtype: str) -> None:
    print(f"\nscale: fast preset, function judge, {part['max_new_tokens']} tokens ({dtype}):")
    columns = ["searches", "tokens_per_s", "plain_tokens_per_s", "vs_plain", "vs_one"]
    print(table(part["rows"], [*columns, "forward_calls_per_token", "same_answers"]))
    split = part["split"]
    print(f"\ntime split, {split['searches']} searches ({split['wall_s']:.1f} s):")
    print(table([split], [f"{name}_share" for name in ("forward", "judge", "embed", "host")]))
    if "operations" in part:
        ops = part["operations"]
        print(f"\ntorch operations per committed token ({ops['model']}, {ops['device']}):")
        print(table(ops["rows"], ["searches", "tokens", "operations", "per_token"]))
        if "ratio" in ops:
            print(f"ratio {ops['ratio']:.3f} (target <= 0.25)")
    print(f"\nsection: {part['section_s']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
