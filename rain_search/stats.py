"""Cost counters shared by the backend, the evaluator and the search.

RAIN's cost is measured in sequential forward calls and tokens the model
processes (vanilla cached decoding costs 1 and 1 per output token), so every
component that runs a model counts both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields


@dataclass
class Counters:
    forward_calls: int = 0
    tokens_processed: int = 0
    evaluator_calls: int = 0
    cache_hits: int = 0

    def count_forward(self, batch: int, length: int) -> None:
        self.forward_calls += 1
        self.tokens_processed += batch * length

    def add(self, other: Counters) -> None:
        """Add ``other`` in place (the counters object may be shared by reference)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> Counters:
        return Counters(**asdict(self))

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )


def share_out(total: Counters, texts: Sequence[int], fresh: Sequence[int]) -> list[Counters]:
    """``total``, what one shared judge or embedder call cost, split among its searches.

    ``texts[i]`` is how many texts search ``i`` brought, ``fresh[i]`` how many
    of them were not cached, so needed the model. Model work goes to the
    searches with fresh texts: each pays every forward call its fresh texts
    filled, rounded up (one call shared by several searches is one sequential
    call for each of them, as the slot decoder charges its calls), and tokens
    in proportion. Judged texts and cache hits go by texts asked and found
    cached. Proportional parts are cut by largest remainders (ties to the
    earlier search), so they add up to the call's own count.
    """
    hits = [asked - new for asked, new in zip(texts, fresh, strict=True)]
    model = list(fresh) if any(fresh) else [1] * len(fresh)  # no fresh text: nobody to blame
    cut = {
        "forward_calls": [-(-total.forward_calls * new // sum(model)) for new in model],
        "tokens_processed": _apportion(total.tokens_processed, model),
        "evaluator_calls": _apportion(total.evaluator_calls, texts),
        "cache_hits": _apportion(total.cache_hits, hits),
    }
    return [Counters(**{name: parts[i] for name, parts in cut.items()}) for i in range(len(texts))]


def _apportion(value: int, weights: Sequence[int]) -> list[int]:
    """``value`` cut in proportion to ``weights`` (evenly if all are 0), adding up to it."""
    weights = list(weights) if any(weights) else [1] * len(weights)
    whole = sum(weights)
    cut = [value * weight // whole for weight in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: -(value * weights[i] % whole))
    for i in by_remainder[: value - sum(cut)]:
        cut[i] += 1
    return cut
