"""What a generation returns: the text, and what it cost step by step."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rain_search.stats import Counters

FinishReason = Literal["eos", "stop", "length", "budget"]
"""``budget``: a timeout or forward-call limit ended the answer early (it is truncated)."""


@dataclass
class Candidate:
    """One child of the root when a step was committed: what the search weighed."""

    text: str
    token_ids: tuple[int, ...]
    visits: float
    real_visits: int
    value: float
    prior: float
    chosen: bool


@dataclass
class LeafRun:
    """One iteration's leaf: when its expansion ran, counted in its search's forward calls.

    Leaves whose call ranges overlap ran together (parallel leaves share each
    call). ``value`` is the judge's score, None when the step closed first and
    the leaf was abandoned.
    """

    text: str
    first_call: int
    last_call: int
    value: float | None


@dataclass
class StepStats:
    """One committed token set and the search that chose it."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    iterations: int
    inherited_visits: int
    nodes_expanded: int  # expansions and dynamic additions that added children
    similarity_updates: int  # fractional visits shared with similar siblings
    forward_calls: int
    tokens_processed: int
    evaluator_calls: int
    cache_hits: int
    visits: float
    value: float
    early_stopped: bool
    tree_size: int
    wall_time: float
    candidates: list[Candidate] = field(default_factory=list)
    leaves: list[LeafRun] = field(default_factory=list)
    rewinds: int = 0  # times this step was taken back from a dead end and decided again


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
        from rain_search.explain import explain_text

        return explain_text(self)

    def plot_tree(self, path: str) -> None:
        """Draw the search as an image (PNG, SVG or PDF by ``path``'s suffix)."""
        from rain_search.explain import plot_tree

        plot_tree(self, path)

    def plot_rounds(self, path: str) -> None:
        """Draw which leaves ran together: one bar per leaf over the forward calls it used."""
        from rain_search.explain import plot_rounds

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
