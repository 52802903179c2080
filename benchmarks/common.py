"""What the speed and quality benchmarks share: models, judges, memory probes, output."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rain_search import RainGenerator, RainResult
from rain_search.models import load_model

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).parent / "data"
EMBEDDED = "model id or path (default: the embedded SmolLM2)"


def bench_parser(
    doc: str | None, *, model: str = EMBEDDED, device: bool = True, quick: str | None = None
) -> argparse.ArgumentParser:
    """A benchmark's parser with the options every benchmark takes, named and explained alike.

    ``--model`` (``model`` is its help), ``--device`` unless ``device`` is False,
    ``--quick`` where a short version exists (``quick`` is its help) and ``--out``;
    the description is the first paragraph of the benchmark's docstring ``doc``.
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--model", help=model)
    if device:
        parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)"
    )
    return parser


RANDOM_SHAPES: dict[str, dict[str, int]] = {
    # Llama-2-7B's shape; weights are random (timing only: no hub, no weights needed).
    "7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
}


def load(model: str | None, device: str | None) -> tuple[Any, Any]:
    """The named model, or ``random:<shape>``: a random Llama with the embedded tokenizer."""
    if model is None or not model.startswith("random:"):
        return load_model(model, device=device)
    shape = model.removeprefix("random:")
    chars = shape.endswith(CHARS_SUFFIX)
    shape = shape.removesuffix(CHARS_SUFFIX)
    if shape not in RANDOM_SHAPES:
        raise SystemExit(
            f"unknown random shape {shape!r}; choose one of {sorted(RANDOM_SHAPES)} "
            f"(with {CHARS_SUFFIX!r} for a character vocabulary)"
        )
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = char_tokenizer() if chars else load_model(None, device="cpu")[1]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **RANDOM_SHAPES[shape],
    )
    torch.manual_seed(0)
    with torch.device(device):
        llama = LlamaForCausalLM(config).to(dtype).eval()
    return llama, tokenizer


CHARS_SUFFIX = "-chars"
"""``random:<shape>-chars``: the random Llama with a character vocabulary (~80 tokens), so
its vocabulary-wide work (the last layer, drawing) costs next to nothing either."""


def char_tokenizer() -> Any:
    """One token per printable character, plus ``<pad>`` and ``<eos>``: no files, no hub
    (the tests' tiny Llama reads with it too)."""
    import string

    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    characters = string.ascii_letters + string.digits + " .,!?;:'\"-()\n"
    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(characters)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class PeakMemory:
    """Peak extra memory while a block runs: CUDA allocations, or resident set size on CPU.

    On CPU a thread samples the process's resident set every few milliseconds;
    the peak above the level at the start (after freed memory is handed back)
    is what the block added (caches, activations), not the model weights.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.peak_bytes = 0

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            yield self
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - base
            return
        _release_freed_memory()
        base = _rss()
        peak = [base]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.005):
                peak[0] = max(peak[0], _rss())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
            self.peak_bytes = max(peak[0], _rss()) - base


def _release_freed_memory() -> None:
    """Hand memory freed by earlier runs back to the OS (glibc), so each run starts level.

    Without it, the first run in a process grows the allocator's pools and
    later runs reuse them, which would charge the first run for everyone.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure untrimmed
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed_run(
    generator: RainGenerator, prompt: str, mode: str, **overrides: Any
) -> tuple[RainResult, int]:
    """One vanilla or RAIN generation, and the peak memory it added in bytes."""
    memory = PeakMemory(generator.model.device)
    with memory.measure():
        if mode == "vanilla":
            result = generator.vanilla(prompt, **overrides)
        else:
            result = generator.generate(prompt, **overrides)
    return result, memory.peak_bytes


def per_token(result: RainResult, peak_bytes: int) -> dict[str, float]:
    """Costs per committed output token."""
    tokens = max(result.completion_tokens, 1)
    steps = max(len(result.steps), 1)
    return {
        "completion_tokens": result.completion_tokens,
        "iterations": result.stats["iterations"] / tokens,
        "early_stop_share": sum(step.early_stopped for step in result.steps) / steps,
        "wall_time": result.wall_time / tokens,
        "forward_calls": result.totals.forward_calls / tokens,
        "tokens_processed": result.totals.tokens_processed / tokens,
        "peak_memory_mb": peak_bytes / 2**20,
        "peak_memory_mb_per_token": peak_bytes / 2**20 / tokens,
    }


def write_json(name: str, data: dict[str, Any], out: Path = RESULTS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def read_lines(name: str) -> list[str]:
    """Non-empty, non-comment lines of a data file."""
    text = (DATA / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table, numbers to 3 significant figures."""

    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


# -- a keyword judge (the pluggable evaluator of the benchmarks) ----------------------------

WORD = re.compile(r"[a-z']+")


def lexicon_score(text: str, good: frozenset[str], bad: frozenset[str]) -> float:
    """Density of good words minus twice that of bad ones, squashed into [-1, 1].

    Graded rather than a ratio, so one more good word (or one less bad one)
    always raises the score and the search has something to climb; divided by
    the square root of the length so padding a text with neutral words does
    not help much either.
    """
    words = WORD.findall(text.lower())
    if not words:
        return 0.0
    net = sum(w in good for w in words) - 2 * sum(w in bad for w in words)
    return math.tanh(net / math.sqrt(len(words)))


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
