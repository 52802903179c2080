"""Cost counters shared by the backend, the evaluator and the search.

RAIN's cost is measured in sequential forward calls and tokens the model
processes (vanilla cached decoding costs 1 and 1 per output token), so every
component that runs a model counts both.
"""

from __future__ import annotations

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
