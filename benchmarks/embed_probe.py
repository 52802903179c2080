"""MiniLM's cost per engine turn by batch size: does one forward call per turn pay on a GPU?

    python -m benchmarks.embed_probe --device cuda --out /tmp/probe

At 64 concurrent ``fast`` searches with every search admitted (4,096 rows), one
engine turn hands the embedder up to ~900 texts (measured on the CPU: 15 calls,
2,744 texts, the largest 896). ``SentenceTransformer.encode`` cuts them into
batches of 32, so such a turn makes ~28 MiniLM forward calls; on a GPU, where a
small model's call costs its kernel launches rather than its rows, one call for
all of them might cost what one of 32 does. On this CPU the larger batch is
slower (896 texts: 2.1 s in batches of 32, 4.5 s in one, padding to the longest
text) and its vectors differ from the batched ones by ~3e-7. For each count of
texts this times ``encode`` at each batch size (median of ``--repeats``, after a
warm-up, the device synchronised), the tokenizer's share apart, and the largest
difference from the vectors of batches of 32. Results go to ``embed_probe.json``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks.common import bench_parser, machine, now, table, write_json
from rain_search.embeddings import load_minilm

WORDS = (
    *("the", "a", "lock", "house", "door", "key", "open", "friend", "help", "safe", "call"),
    *("ask", "owner", "police", "neighbour", "window", "quiet", "kind", "careful", "think"),
    *("better", "way", "please", "sorry", "maybe", "today", "together"),
)


def texts_like_a_turn(count: int, seed: int = 0) -> list[str]:
    """``count`` texts of 1-40 words, as the search's path suffixes and rollouts are."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[32, 128, 512, 1024])
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[32, 0], help="0: all texts at once"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.model:
        parser.error("--model: this probe times the MiniLM embedder only")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_minilm(device)
    report: dict[str, Any] = {"machine": machine(), "started": now(), "device": device}
    report["rows"] = probe(model, args.counts, args.batch_sizes, args.repeats)
    print(table(report["rows"], list(report["rows"][0])))
    path = write_json("embed_probe", report, args.out)
    print(f"wrote {path}")
    return 0


def probe(
    model: Any, counts: Sequence[int], batch_sizes: Sequence[int], repeats: int
) -> list[dict[str, Any]]:
    """One row per (count, batch size): seconds per ``encode``, tokenizing apart, and the
    largest difference from the first batch size's vectors."""
    tokens = getattr(model, "preprocess", None) or model.tokenize  # renamed in 5.x
    rows = []
    for count in counts:
        texts = texts_like_a_turn(count)
        reference: torch.Tensor | None = None
        for size in batch_sizes:
            batch = size or count
            vectors = encode(model, texts, batch)  # warm-up: kernels for these shapes
            seconds = statistics.median(timed(encode, model, texts, batch) for _ in range(repeats))
            tokenize = statistics.median(timed(tokens, texts) for _ in range(repeats))
            reference = vectors if reference is None else reference
            rows.append(
                {
                    "texts": count,
                    "batch_size": batch,
                    "calls": -(-count // batch),
                    "encode_s": seconds,
                    "tokenize_s": tokenize,
                    "ms_per_text": 1000 * seconds / count,
                    "max_diff": float((vectors - reference).abs().max()),
                }
            )
            print(f"[{now()}] {count} texts in batches of {batch}: {seconds:.3f} s", flush=True)
    return rows


def encode(model: Any, texts: list[str], batch_size: int) -> torch.Tensor:
    vectors: torch.Tensor = model.encode(
        texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
    )
    return vectors.float().cpu()  # the host copy the engine makes too, and a sync


def timed(work: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
