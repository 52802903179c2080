"""What one committed step records: the candidates it weighed, its leaves, its cost.

Below :mod:`rain_search.result` (a result holds its steps) and
:mod:`rain_search.explain` (which draws them), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
