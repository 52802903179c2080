"""What one committed step records: the candidates it weighed, its leaves, its cost.

Below :mod:`rain_search.result` (a result holds its steps) and
:mod:`rain_search.explain` (which draws them), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal[
    "most_visits",
    "best_value",
    "overruled",
    "fewer_visits",
    "worse",
    "tied",
    "few_visits",
    "clearly_worse",
    "unvisited",
    "rewound",
]
"""Why a step kept or left a candidate: the commit's own record (``tree.decide``).

Kept: ``most_visits`` (the visits rule), ``best_value`` (the value rule), or
``overruled`` (the rule's own pick was judged clearly worse than a sibling,
``commit_margin``, and this child is the rule's pick among the rest). Left:
``fewer_visits`` (fewer visits than the kept child under the visits rule, or
its value with fewer visits under the value rule), ``worse`` (a lower value
than the kept child: the value rule, or the visits rule's tie-break), ``tied``
(the same visits and value: the first one is kept), ``few_visits`` (the value
rule: under half the most real visits, so not weighed), ``clearly_worse``
(its value ``commit_margin`` or more below a visited sibling's: never
committed), ``unvisited`` (no real visit), ``rewound`` (committed, then taken
back because every child below it was judged bad).
"""

KEPT: frozenset[Verdict] = frozenset({"most_visits", "best_value", "overruled"})


@dataclass
class Candidate:
    """One child of the root when a step was committed: what the search weighed.

    ``verdict`` is why the commit kept or left it, from the same record the
    commit was made from, so an explanation cannot say what did not happen.
    """

    text: str
    token_ids: tuple[int, ...]
    visits: float
    real_visits: int
    value: float
    prior: float
    chosen: bool
    verdict: Verdict


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
    rewound: list[Candidate] = field(default_factory=list)  # the children taken back, in order
