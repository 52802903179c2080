"""Soak: hundreds of requests against one `rain serve`, its memory sampled all along.

    python -m benchmarks.soak                      # 300 requests, 4 clients, 12-token answers
    python -m benchmarks.soak --requests 40        # a short look
    python -m benchmarks.soak --untrimmed          # the server without its heap trimming

The server runs as its own process (``rain serve``, the embedded model, the
fast preset and a keyword judge, as in :mod:`benchmarks.serve`); the clients
are threads of this process. Every fifth request is a stream, and every
tenth a stream the client leaves after its first chunk (a disconnect). The
server's resident memory (RSS) is read after every ``--sample-every``
requests. The question is whether it levels off: the report gives RSS at
start, after the warm-up, and the growth over each quarter of the run.
Results go to ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import psutil

from benchmarks.common import bench_parser, machine, now, write_json
from benchmarks.serve import JUDGE, MODEL_NAME, PROMPT, server_process

MB = 1024 * 1024
UNTRIMMED = (
    "import sys; import rain_integrations.server.memory as memory; "
    "memory.trim_heap = lambda: False; "
    "from rain_search.cli import main; sys.exit(main(sys.argv[1:]))"
)
"""``rain serve`` with :func:`~rain_integrations.server.memory.trim_heap` turned off."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = ["--preset", "fast", "--evaluator", JUDGE, "--embedder", "hidden"]
    options += ["--max-concurrent", str(args.concurrency)]
    if args.model:
        options += ["--model", args.model]
    running = server_process(options)
    if args.untrimmed:  # the same server with trim_heap a no-op, for comparison
        running.command[1:3] = ["-c", UNTRIMMED]
    with running as url:
        server = psutil.Process(running.process.pid)
        print(f"[{now()}] server at {url}, pid {server.pid}", flush=True)
        report = soak(url, server, args)
    report["machine"] = machine()
    path = write_json(args.name, report, args.out)
    print_report(report)
    print(f"wrote {path}")
    return 0


def soak(url: str, server: psutil.Process, args: argparse.Namespace) -> dict[str, Any]:
    """Send the requests from ``args.concurrency`` threads, sampling the server's RSS."""
    samples = [{"requests": 0, "rss_mb": server.memory_info().rss / MB, "t_s": 0.0}]
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(args.requests))
    done = 0
    start = time.perf_counter()

    stop_at = start + 60 * args.max_minutes if args.max_minutes else None

    def client() -> None:
        nonlocal done
        for index in counter:  # each thread takes the next request number
            if stop_at is not None and time.perf_counter() > stop_at:
                return  # out of time: the run ends with the requests made so far
            outcome = one_request(url, index, args.max_tokens)
            with lock:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                done += 1
                if done % args.sample_every == 0 or done == args.requests or stopping():
                    rss = server.memory_info().rss / MB
                    samples.append(
                        {"requests": done, "rss_mb": rss, "t_s": time.perf_counter() - start}
                    )
                    print(f"[{now()}] {done} requests, server RSS {rss:.0f} MB", flush=True)

    def stopping() -> bool:
        return stop_at is not None and time.perf_counter() > stop_at

    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "max_tokens": args.max_tokens,
            "model": args.model or "embedded SmolLM2-135M-Instruct",
            "preset": "fast",
            "judge": JUDGE,
            "heap_trimmed": not args.untrimmed,
        },
        "wall_s": time.perf_counter() - start,
        "requests_done": done,
        "outcomes": outcomes,
        "samples": samples,
        "summary": summarise(samples),
    }


def one_request(url: str, index: int, max_tokens: int) -> str:
    """Request ``index``: plain, a whole stream, or a stream left after its first chunk."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": f"{PROMPT} ({index})"}],
        "max_tokens": max_tokens,
        "seed": index,
    }
    try:
        if index % 10 == 9:
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=600
            ) as response:
                for _ in response.iter_lines():
                    break  # the client leaves: the server cancels the search
            return "disconnected"
        if index % 5 == 4:
            response = httpx.post(
                f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=600
            )
            return "stream" if response.text.rstrip().endswith("[DONE]") else "cut stream"
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
        return "200" if response.status_code == 200 else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        return type(exc).__name__


def summarise(samples: list[dict[str, float]]) -> dict[str, float]:
    """RSS at start and end, the peak, and the growth over each quarter of the requests."""
    rss = [s["rss_mb"] for s in samples]
    quarters = [rss[round(q * (len(rss) - 1) / 4)] for q in range(5)]
    return {
        "start_mb": rss[0],
        "after_first_sample_mb": rss[1] if len(rss) > 1 else rss[0],
        "end_mb": rss[-1],
        "peak_mb": max(rss),
        **{f"growth_q{q + 1}_mb": quarters[q + 1] - quarters[q] for q in range(4)},
    }


def print_report(report: dict[str, Any]) -> None:
    s, settings = report["summary"], report["settings"]
    print(
        f"{report['requests_done']} of {settings['requests']} requests "
        f"({settings['concurrency']} clients, "
        f"{settings['max_tokens']}-token answers) in {report['wall_s']:.0f} s: {report['outcomes']}"
    )
    print(
        f"server RSS: {s['start_mb']:.0f} MB at start, {s['after_first_sample_mb']:.0f} MB after "
        f"the first sample, {s['end_mb']:.0f} MB at the end (peak {s['peak_mb']:.0f} MB)"
    )
    growth = ", ".join(f"{s[f'growth_q{q}_mb']:+.0f}" for q in range(1, 5))
    print(f"growth per quarter of the run (MB): {growth}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, device=False)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument(
        "--max-minutes", type=float, help="send no new request after this long (default: none)"
    )
    parser.add_argument(
        "--untrimmed", action="store_true", help="serve without returning freed heap memory"
    )
    parser.add_argument("--name", default="soak", help="results file name (default: soak)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
