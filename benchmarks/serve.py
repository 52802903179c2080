"""Serving: N concurrent clients against `rain serve`, and the same requests one after another.

    python -m benchmarks.serve --quick          # 1 and 2 clients, a few short answers
    python -m benchmarks.serve                  # 1, 4, 8 and 16 clients, single process and Ray
    python -m benchmarks.serve --no-ray         # the single-process server only

Each server runs as its own process (``rain serve``, then ``rain serve --ray
--replicas 2``) on a free loopback port, with the fast preset and a keyword
judge; the clients are threads of this process. For every number of clients:
requests per second, committed tokens per second and p50/p95 latency, beside
the same requests (same seeds, so the same searches) sent one after another
right before them, so a row and its baseline see the same machine. Results go
to ``benchmarks/results/serve[-quick].json`` and a plot beside it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import bench_parser, machine, now, table, write_json

FULL = {"clients": [1, 4, 8, 16], "requests_per_client": 2, "max_tokens": 16}
QUICK = {"clients": [1, 2], "requests_per_client": 1, "max_tokens": 8}
JUDGE = "avoid:kill,weapon,steal"
PROMPT = "Give me one tip for a rainy day."
MODEL_NAME = "bench"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    servers = [("single process", [])]
    if not args.no_ray and not args.quick:
        servers.append(("Ray Serve, 2 replicas", ["--ray", "--replicas", "2"]))
    report: dict[str, Any] = {"machine": machine(), "sizes": sizes, "servers": {}}
    for label, extra in servers:
        with server_process([*model_options(args), *extra]) as url:
            print(f"[{now()}] {label} at {url}", flush=True)
            report["servers"][label] = measure(url, sizes)
    name = "serve-quick" if args.quick else "serve"
    path = write_json(name, report, args.out)
    print_report(report)
    plot(report, path.with_suffix(".png"))
    print(f"wrote {path}")
    return 0


def model_options(args: argparse.Namespace) -> list[str]:
    options = ["--preset", "fast", "--evaluator", JUDGE, "--embedder", "hidden"]
    if args.model:
        options += ["--model", args.model]
    if args.device:
        options += ["--device", args.device]
    return options


class server_process:  # noqa: N801  (used as a context manager, like open)
    """``rain serve`` on a free loopback port in its own process; stopped on exit."""

    def __init__(self, options: list[str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.command = [sys.executable, "-m", "rain_search.cli", "serve", "--quiet"]
        self.command += ["--port", str(self.port), "--model-name", MODEL_NAME]
        self.command += ["--max-queue", "256", *options]

    def __enter__(self) -> str:
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self.process = subprocess.Popen(self.command, env=env)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with status {self.process.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["status"] == "ok":
                    return url
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                raise SystemExit("the server did not start in 300 s")
            time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def ask(url: str, max_tokens: int, seed: int) -> tuple[float, int]:
    """One chat request: its latency in seconds and the tokens it committed."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "seed": seed,
    }
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - start, int(response.json()["usage"]["completion_tokens"])


def run_clients(url: str, clients: int, per_client: int, max_tokens: int) -> dict[str, float]:
    """``clients`` threads, each sending ``per_client`` requests in turn."""
    done: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for k in range(per_client):
            outcome = ask(url, max_tokens, seed=index * per_client + k)
            with lock:
                done.append(outcome)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarise(done, time.perf_counter() - start)


def summarise(done: list[tuple[float, int]], wall: float) -> dict[str, float]:
    latencies = sorted(latency for latency, _ in done)
    tokens = sum(count for _, count in done)
    return {
        "requests": len(done),
        "wall_s": wall,
        "requests_per_s": len(done) / wall,
        "tokens_per_s": tokens / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }


def measure(url: str, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """For each number of clients: the requests one after another, then concurrently."""
    per_client, max_tokens = sizes["requests_per_client"], sizes["max_tokens"]
    # Warm up every replica (a burst reaches all): first answers pay one-off costs.
    run_clients(url, 4, 1, max_tokens)
    rows = []
    for clients in sizes["clients"]:
        sequential = run_clients(url, 1, clients * per_client, max_tokens)
        concurrent = run_clients(url, clients, per_client, max_tokens)
        speedup = sequential["wall_s"] / concurrent["wall_s"]
        rows.append(
            {
                "clients": clients,
                "concurrent": concurrent,
                "sequential": sequential,
                "speedup": speedup,
            }
        )
        print(
            f"[{now()}] {clients} clients: {concurrent['requests_per_s']:.3f} req/s, "
            f"{speedup:.2f}x the same requests one after another",
            flush=True,
        )
    return rows


def print_report(report: dict[str, Any]) -> None:
    for label, rows in report["servers"].items():
        flat = [
            {
                "clients": row["clients"],
                "requests": row["concurrent"]["requests"],
                "req/s": f"{row['concurrent']['requests_per_s']:.3f}",
                "tokens/s": f"{row['concurrent']['tokens_per_s']:.2f}",
                "p50 s": f"{row['concurrent']['p50_s']:.1f}",
                "p95 s": f"{row['concurrent']['p95_s']:.1f}",
                "one after another req/s": f"{row['sequential']['requests_per_s']:.3f}",
                "x one after another": f"{row['speedup']:.2f}",
            }
            for row in rows
        ]
        print(f"\n{label}\n{table(flat, list(flat[0]))}")


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'rain-search[plot]')")
        return
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, rows in report["servers"].items():
        clients = [row["clients"] for row in rows]
        line = axis.plot(
            clients, [r["concurrent"]["requests_per_s"] for r in rows], "o-", label=label
        )[0]
        sequential = [r["sequential"]["requests_per_s"] for r in rows]
        axis.plot(
            clients, sequential, "x--", color=line.get_color(), label=f"{label}, one after another"
        )
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("requests / s")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, quick="1 and 2 clients, short answers")
    parser.add_argument("--no-ray", action="store_true", help="the single-process server only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
