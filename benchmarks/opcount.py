"""What the scale benchmark measures around a batch of searches, without touching the library.

- :class:`OpCounter`: torch operations dispatched (aten ops, counted by a
  ``TorchDispatchMode``) while a block runs, in total and by operator. A count,
  not a time, so it is the same on every run and every machine: the CPU
  stand-in for "host work per round".
- :class:`TimeSplit`: wall time spent in the backend's ``forward``, the
  evaluator's ``score`` and the embedder's ``embed``, by wrapping those
  methods of one generator's parts as instance attributes for the length of a
  block (exclusive times: a wrapped call inside another counts once, for the
  inner one). On CUDA each wrapper synchronises before and after, so the GPU
  work a call launches is charged to it.
- :func:`run_searches`: ``generate_batch`` with a seed per search (the
  library's ``generate_batch`` takes one configuration for all prompts):
  every search handed to the engine before any is read, as it does.
- :func:`plain_batched`: ``model.generate`` on N left-padded rows, greedy,
  exactly ``tokens`` new tokens each; tokens per second.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rain_search import RainConfig, RainGenerator, RainResult


class OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched on this thread while active.

    >>> with OpCounter() as ops:
    ...     _ = torch.ones(2) + 1
    >>> ops.total
    2
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.by_op: Counter[str] = Counter()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        self.total += 1
        self.by_op[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

    def top(self, count: int = 12) -> dict[str, int]:
        return dict(self.by_op.most_common(count))


class TimeSplit:
    """Exclusive wall seconds in the wrapped methods of a generator's backend, judge, embedder."""

    PARTS = (
        ("forward", "backend", "forward"),
        ("judge", "evaluator", "score_pairs"),  # what the engine calls (``score`` if absent)
        ("embed", "embedder", "embed"),
    )

    def __init__(self, generator: RainGenerator) -> None:
        self.generator = generator
        self.seconds: dict[str, float] = {name: 0.0 for name, _, _ in self.PARTS}
        self.calls: dict[str, int] = {name: 0 for name, _, _ in self.PARTS}
        self.cuda = generator.model.device.type == "cuda"
        self._stack: list[float] = []  # per open call: seconds its wrapped callees took

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._sync()
            start = time.perf_counter()
            self._stack.append(0.0)
            try:
                return method(*args, **kwargs)
            finally:
                self._sync()
                elapsed = time.perf_counter() - start
                inner = self._stack.pop()
                self.seconds[name] += elapsed - inner
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1] += elapsed

        return timed

    @contextlib.contextmanager
    def measure(self) -> Iterator[TimeSplit]:
        wrapped = []
        try:
            for name, part, method in self.PARTS:
                owner = getattr(self.generator, part)
                if not hasattr(owner, method):
                    method = "score"
                setattr(owner, method, self._wrap(name, getattr(owner, method)))
                wrapped.append((owner, method))
            yield self
        finally:
            for owner, method in wrapped:
                with contextlib.suppress(AttributeError):
                    delattr(owner, method)  # the class's method shows through again

    def report(self, wall: float) -> dict[str, Any]:
        """Seconds and shares of ``wall``; ``host`` is the rest (the engine's own work)."""
        out: dict[str, Any] = {"wall_s": wall}
        for name, seconds in self.seconds.items():
            out[f"{name}_s"] = seconds
            out[f"{name}_calls"] = self.calls[name]
        out["host_s"] = wall - sum(self.seconds.values())
        for name in (*self.seconds, "host"):
            out[f"{name}_share"] = out[f"{name}_s"] / wall if wall else 0.0
        return out


def run_searches(
    generator: RainGenerator, prompts: Sequence[str], seeds: Sequence[int], config: RainConfig
) -> list[RainResult]:
    """``generate_batch`` with ``seeds[i]`` for ``prompts[i]``: all started, then all read."""
    streams = [
        generator.stream(prompt, config=config, seed=seed).start()
        for prompt, seed in zip(prompts, seeds, strict=True)
    ]
    return [stream.finish() for stream in streams]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def plain_batched(
    model: Any, rows: Sequence[Sequence[int]], tokens: int, pad_id: int
) -> dict[str, float]:
    """Greedy ``model.generate`` over ``rows`` (left-padded), ``tokens`` new tokens per row."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([[pad_id] * (width - len(row)) + list(row) for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    options = {
        "do_sample": False,
        "max_new_tokens": tokens,
        "min_new_tokens": tokens,
        "pad_token_id": pad_id,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    ids, mask = ids.to(model.device), mask.to(model.device)
    model.generate(
        input_ids=ids, attention_mask=mask, **{**options, "max_new_tokens": 2, "min_new_tokens": 2}
    )  # warm
    synchronize(model.device)
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, **options)
    synchronize(model.device)
    wall = time.perf_counter() - start
    produced = (out.shape[1] - width) * len(rows)
    return {"wall_s": wall, "tokens": produced, "tokens_per_s": produced / wall}
