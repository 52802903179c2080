"""What a generation returns: the text, and what it cost step by step."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rain_search.explain import explain_text, plot_rounds, plot_tree
from rain_search.stats import Counters
from rain_search.steps import Candidate, LeafRun, StepStats

__all__ = ["Candidate", "FinishReason", "LeafRun", "RainResult", "StepStats"]

FinishReason = Literal["eos", "stop", "length", "budget"]
"""``budget``: a timeout or forward-call limit ended the answer early (it is truncated)."""


@dataclass
class RainResult:
    """A generated answer with its search statistics.

    ``steps`` is empty for vanilla generation; ``totals`` counts model work
    (prompt encoding included) and judge work together.
    """

    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: FinishReason
    mode: Literal["rain", "vanilla"]
    totals: Counters
    wall_time: float
    seed: int
    steps: list[StepStats] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """True when a budget, not the answer itself, ended the generation."""
        return self.finish_reason == "budget"

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def token_sets(self) -> list[str]:
        """The committed token sets, as text, in order."""
        return [step.text for step in self.steps]

    @property
    def stats(self) -> dict[str, Any]:
        """Totals and per-output-token costs, flat, for logs and metadata."""
        per_token = max(self.completion_tokens, 1)
        return {
            "mode": self.mode,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
            "truncated": self.truncated,
            "steps": len(self.steps),
            "iterations": sum(step.iterations for step in self.steps),
            "nodes_expanded": sum(step.nodes_expanded for step in self.steps),
            "similarity_updates": sum(step.similarity_updates for step in self.steps),
            "rewinds": sum(step.rewinds for step in self.steps),
            **asdict(self.totals),
            "forward_calls_per_token": self.totals.forward_calls / per_token,
            "tokens_processed_per_token": self.totals.tokens_processed / per_token,
            "wall_time": self.wall_time,
            "seed": self.seed,
        }

    def explain(self) -> str:
        """The search step by step as a text tree: what was weighed, what was kept."""
        return explain_text(self)

    def plot_tree(self, path: str) -> None:
        """Draw the search as an image (PNG, SVG or PDF by ``path``'s suffix)."""
        plot_tree(self, path)

    def plot_rounds(self, path: str) -> None:
        """Draw which leaves ran together: one bar per leaf over the forward calls it used."""
        plot_rounds(self, path)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable."""
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "stats": self.stats,
            "steps": [asdict(step) for step in self.steps],
            "warnings": self.warnings,
        }
