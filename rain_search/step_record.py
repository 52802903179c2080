"""What a search records while it searches a step, and the statistics and result made of it.

A *step* is one committed token set: the iterations from one root, then the
commit. :class:`StepProgress` tallies the step in progress; at the commit it
becomes the reader's :class:`~rain_search.result.StepStats` (the records
themselves live in :mod:`rain_search.steps`, below the result and its
explanation), and the last step's commit builds the :class:`RainResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rain_search.result import Candidate, FinishReason, LeafRun, RainResult, StepStats
from rain_search.stats import Counters
from rain_search.tree import Decision, Node, Visits, count_nodes

Decode = Callable[[Sequence[int]], str]
"""Token ids to text (the backend's ``decode``)."""


@dataclass
class StepProgress:
    """What one step has done so far (reset at every commit)."""

    before: Counters = field(default_factory=Counters)  # the search's cost when the step began
    shown_text: str = ""
    started: float = field(default_factory=time.perf_counter)
    inherited: int = 0
    fresh: int = 0
    stopped_early: bool = False
    nodes_expanded: int = 0
    similarity_updates: int = 0
    leaves: list[LeafRun] = field(default_factory=list)
    rewinds: int = 0
    rewound: list[Candidate] = field(default_factory=list)  # children committed, then taken back

    def take_back(self, child: Node, then: Visits, decode: Decode) -> None:
        """Record that ``child`` (with ``then``, its statistics at the commit) was taken back."""
        self.rewinds += 1
        self.rewound.append(
            Candidate(
                text=decode(child.token_ids),
                token_ids=child.token_ids,
                visits=then.n,
                real_visits=then.fn,
                value=then.q,
                prior=child.prior,
                chosen=False,
                verdict="rewound",
            )
        )

    def stats(
        self,
        *,
        index: int,
        root: Node,
        decision: Decision,
        text: str,
        token_ids: Sequence[int],
        cost: Counters,
        decode: Decode,
    ) -> StepStats:
        """The step as committed by ``decision`` below ``root``; ``cost``: the search's so far."""
        spent = cost - self.before
        chosen = decision.chosen
        return StepStats(
            index=index,
            text=text,
            token_ids=tuple(token_ids),
            iterations=self.fresh,
            inherited_visits=self.inherited,
            nodes_expanded=self.nodes_expanded,
            similarity_updates=self.similarity_updates,
            forward_calls=spent.forward_calls,
            tokens_processed=spent.tokens_processed,
            evaluator_calls=spent.evaluator_calls,
            cache_hits=spent.cache_hits,
            visits=chosen.n,
            value=chosen.q,
            early_stopped=self.stopped_early,
            rewinds=self.rewinds,
            rewound=list(self.rewound),
            tree_size=count_nodes(root),
            wall_time=time.perf_counter() - self.started,
            candidates=candidates(decision, decode),
            leaves=self.leaves,
        )


def candidates(decision: Decision, decode: Decode) -> list[Candidate]:
    """The root's children at commit time and the commit's verdict on each, for
    :meth:`RainResult.explain`."""
    return [
        Candidate(
            text=decode(child.token_ids),
            token_ids=child.token_ids,
            visits=child.n,
            real_visits=child.fn,
            value=child.q,
            prior=child.prior,
            chosen=child is decision.chosen,
            verdict=verdict,
        )
        for child, verdict in zip(decision.children, decision.verdicts, strict=True)
    ]


def make_result(
    *,
    text: str,
    token_ids: Sequence[int],
    prompt_tokens: int,
    finish: FinishReason,
    cost: Counters,
    started: float,
    seed: int,
    steps: list[StepStats],
    out_of_budget: str,
) -> RainResult:
    """The answer once its last step commits; ``out_of_budget``: why a budget cut it, if one did."""
    return RainResult(
        text=text,
        token_ids=list(token_ids),
        prompt_tokens=prompt_tokens,
        finish_reason=finish,
        mode="rain",
        totals=cost.copy(),
        wall_time=time.perf_counter() - started,
        seed=seed,
        steps=steps,
        # only a cut answer carries the budget's warning: one that ended on its own is whole
        warnings=[out_of_budget] if finish == "budget" else [],
    )
