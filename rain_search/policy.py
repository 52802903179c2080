"""The RAIN search policy: one generation as a state machine that asks for work.

Each step (one committed token set) runs iterations of *select, expand and
roll out, judge, back up, share with similar siblings* from the current root,
then commits the most visited child, keeping its subtree for the next step.
The policy never calls the model: it hands out iterations that yield
:mod:`~rain_search.work` units, and the engine (one layer up) answers them, for
many searches at once, in shared forward calls.

Beside it: :mod:`~rain_search.speculation` guesses expansions ahead of the
iterations, :mod:`~rain_search.step_record` tallies each step and builds the
statistics and the result.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

import torch

from rain_search.admission import Footprint
from rain_search.backends.base import (
    PUNCTUATION,
    Backend,
    ExpandRequest,
    Expansion,
    Proposal,
    StateT,
)
from rain_search.config import RainConfig
from rain_search.embeddings import Embedder
from rain_search.errors import Cancelled
from rain_search.evaluators import Evaluator, check_score
from rain_search.result import FinishReason, LeafRun, RainResult, StepStats
from rain_search.seeds import draw_seed, make_generator
from rain_search.speculation import expand_key, guess_expansions
from rain_search.stats import Counters
from rain_search.step_record import StepProgress, make_result
from rain_search.stops import Stops
from rain_search.tree import (
    Decision,
    Node,
    ValueRange,
    Visits,
    add_pending,
    add_prior,
    all_judged_bad,
    assign_priors,
    backup,
    decide,
    drop_child_visits,
    early_stop,
    mix_root_noise,
    needs_more_children,
    select_leaf,
    similarity_update,
)
from rain_search.work import Assess, Embed, Expand, ExpandKey, Iteration, Judge, Work


class TreeSearch(Generic[StateT]):
    """One RAIN generation over any :class:`Backend`, as a policy that asks for work.

    The search never calls the model itself: each iteration is a generator
    that yields :mod:`~rain_search.work` units (expand a leaf, judge texts,
    embed texts) and is sent the replies. An :class:`~rain_search.engine.Engine`
    runs the iterations of one search, ``parallel_leaves`` at a time, and of
    many searches together, in shared forward calls; it sees the search only
    through the :class:`~rain_search.work.Policy` protocol. ``StateT`` is the
    backend's per-node state (its tree nodes carry it as ``Node.state``).
    """

    def __init__(
        self,
        backend: Backend[StateT],
        evaluator: Evaluator,
        embedder: Embedder,
        config: RainConfig,
        prompt: str,
    ) -> None:
        self.backend = backend
        self.evaluator = evaluator
        self.embedder = embedder
        self.config = config
        self.prompt = prompt
        self.cancelled: Callable[[], bool] = lambda: False
        self.result: RainResult | None = None
        self.seed = draw_seed(config.seed)
        self.bounds = ValueRange()
        self.stops = Stops(backend, config.all_stops)
        self.prompt_ids: list[int] = []
        self.answer: list[int] = []
        self.cost = Counters()  # this search's share of every call, attributed by the engine
        self.started = time.perf_counter()  # reset when the engine admits it
        self.out_of_budget = ""
        self.root: Node | None = None  # the current root: what the search keeps alive
        self.steps_done: list[StepStats] = []
        self.running = 0  # iterations started and not yet backed up
        self.closing = False  # this step has what it needs: no new iterations
        self.round_open = False  # leaves may still join the current round
        self.round_left = 0  # leaves the current round may still start
        self.step = StepProgress()  # the step being searched
        self.held: Commit | None = None  # the last commit, while it may still be taken back
        self.rewinds = 0

    # -- outer loop: search, commit, repeat ---------------------------------------

    def begin(self, root_state: StateT, prompt_ids: Sequence[int]) -> None:
        """Start from the encoded prompt (the engine encodes it).

        The clock of ``timeout`` and ``wall_time`` starts here: time spent waiting
        for room in the engine's batch budget is not charged to the answer.
        """
        self.started = time.perf_counter()
        self.prompt_ids = list(prompt_ids)
        self.root = Node((), state=root_state)
        self.step = StepProgress(before=self.cost.copy())

    # -- one step: iterate until T visits and the minimum fresh ones, then commit ---

    def next_iteration(self) -> Iteration | None:
        """A new iteration to run now, or None while the step needs no more.

        At most ``parallel_leaves`` run at once. The budgets are checked before
        every iteration once the root has something to commit; the early stop
        and the visit counts after every iteration (:meth:`iteration_done`).
        """
        root = self.root
        assert root is not None
        if self.cancelled():
            raise Cancelled("the generation was cancelled")
        if self.running == 0 and not self.round_open:
            self.round_open, self.round_left = True, self.round_size()
        if self.closing or not self.round_open or self.round_left <= 0:
            return None
        if root.children:  # something to commit: the budgets may end the answer here
            self.out_of_budget = self.spent_budget()
            if self.out_of_budget:
                self.closing = True
                return None
        self.running += 1
        self.round_left -= 1
        return self.iterate(root)

    def footprint(self, prompt_tokens: int) -> Footprint:
        """The most this search holds in the decoder: every parallel leaf's candidate
        rows and rollout row, each reaching the prompt and the whole answer."""
        config = self.config
        per_leaf = max(config.num_children, config.samples_per_expansion + 1) + 1
        rows = (config.parallel_leaves + config.speculative_leaves) * per_leaf
        return Footprint(rows=rows, kv_tokens=rows * (prompt_tokens + config.max_new_tokens))

    def round_size(self) -> int:
        """Leaves for the next round: ``parallel_leaves``, but no more than the step still needs.

        Leaves past the step's visit budget would be abandoned unjudged, or,
        when they come back together, hand the commit visits nobody chose.
        """
        root, config = self.root, self.config
        assert root is not None
        needed = max(
            config.max_iterations - int(root.fn), config.min_fresh_iterations - self.step.fresh
        )
        return max(1, min(config.parallel_leaves, needed))

    def iteration_done(self, ran: bool) -> None:
        """Count a finished iteration and decide whether the step has enough.

        Leaves are selected in rounds: once one of a round's leaves is back,
        the next round waits for all of them. Refilling a finished leaf's place
        at once would visit quick leaves (an ended answer, a cached judgment)
        again and again while slow ones roll out, and visits decide the commit.
        """
        self.running -= 1
        self.round_open = False
        if not ran:
            return
        root, config = self.root, self.config
        assert root is not None
        self.step.fresh += 1
        # Judged again after every leaf: leaves answered in the same batch may undo an early
        # stop that the first of them made true, and the commit must see the state that held.
        stopped = early_stop(
            root,
            config.early_stop_visits,
            config.early_stop_value,
            config.commit_by,
            config.commit_margin,
        )
        spent = self.step.fresh >= config.min_fresh_iterations and root.fn >= config.max_iterations
        self.step.stopped_early = stopped
        self.closing = stopped or spent or bool(self.out_of_budget)

    @property
    def ready_to_commit(self) -> bool:
        return self.closing and self.running == 0

    def finish_step(self) -> list[StepStats]:
        """Commit a child (``commit_rule``), or take the last commit back; the steps now final.

        The answer ends here or the next step begins. While the search may
        still rewind (``max_rewinds``), a committed step is held back until the
        step after it commits, so a reader never sees a step that is taken back.
        """
        root = self.root
        assert root is not None
        if self.can_rewind(root):
            self.rewind()
            return []
        decision = decide(root, self.config.commit_by, self.config.commit_margin)
        child = decision.chosen
        answer, shown_text = list(self.answer), self.step.shown_text
        self.answer.extend(child.token_ids)
        text, finish, self.answer = self.stops.finish(
            self.answer, self.backend.eos_token_ids, self.config.max_new_tokens
        )
        stats = self.step_stats(root, decision, text[len(shown_text) :], self.answer[len(answer) :])
        self.steps_done.append(stats)
        final = [self.held.stats] if self.held is not None else []
        self.held = None
        if child.terminal or self.out_of_budget:
            reason = child.finish or ("budget" if self.out_of_budget else finish)
            self.result = self.make_result(text, reason)
            return [*final, stats]
        if self.rewinds < self.config.max_rewinds:
            self.held = Commit(root, child, answer, self.step, stats)
        else:
            final.append(stats)
        self.root = self.commit(root, child)
        self.closing = self.round_open = False
        self.step = StepProgress(before=self.cost.copy(), shown_text=text, inherited=int(child.fn))
        return final

    def can_rewind(self, root: Node) -> bool:
        """Every child judged bad, and the step before has untried alternatives to go back to."""
        held = self.held
        return (
            held is not None
            and not self.out_of_budget
            and bool(held.siblings)
            and all_judged_bad(root)
        )

    def rewind(self) -> None:
        """Take the last commit back: its step is decided again without the child that led here.

        Beyond the paper, which never revisits a committed step: when a step's
        every child is judged bad, the set committed before it led into a dead
        end, so the search goes back to that step's root and its other children
        (their subtrees and statistics kept) instead of committing a known-bad set.
        """
        held = self.held
        assert held is not None
        self.held = None
        self.rewinds += 1
        self.steps_done.pop()  # the held step: never shown
        parent = held.root
        drop_child_visits(parent, held.chosen_then)
        parent.children = held.siblings
        mix_root_noise(parent.children, self.config.root_noise)
        self.root, self.answer = parent, held.answer
        self.step = held.step
        self.step.fresh, self.step.stopped_early = 0, False
        self.step.take_back(held.chosen, held.chosen_then, self.backend.decode)
        self.step.inherited = int(parent.fn)
        self.closing = self.round_open = False

    def step_stats(
        self, root: Node, decision: Decision, text: str, token_ids: list[int]
    ) -> StepStats:
        """The statistics of the step ``decision`` commits; ``text``: what it adds."""
        return self.step.stats(
            index=len(self.steps_done),
            root=root,
            decision=decision,
            text=text,
            token_ids=token_ids,
            cost=self.cost,
            decode=self.backend.decode,
        )

    def make_result(self, text: str, finish: FinishReason) -> RainResult:
        return make_result(
            text=text,
            token_ids=self.answer,
            prompt_tokens=len(self.prompt_ids),
            finish=finish,
            cost=self.cost,
            started=self.started,
            seed=self.seed,
            steps=self.steps_done,
            out_of_budget=self.out_of_budget,
        )

    def spent_budget(self) -> str:
        """Why the answer must stop now (empty while the budgets last)."""
        config = self.config
        elapsed = time.perf_counter() - self.started
        if config.timeout is not None and elapsed >= config.timeout:
            return f"the {config.timeout:g} s timeout was reached; the answer is truncated"
        calls = self.cost.forward_calls
        if config.max_forward_calls is not None and calls >= config.max_forward_calls:
            return (
                f"the budget of {config.max_forward_calls} forward calls was spent; "
                "the answer is truncated"
            )
        return ""

    def commit(self, root: Node, child: Node) -> Node:
        """Make ``child`` the root, keeping its subtree; siblings go unless held for a rewind."""
        child.state = self.backend.advance(root.state, child.state)
        child.parent = None
        root.children = []
        mix_root_noise(child.children, self.config.root_noise)
        return child

    # -- one iteration -------------------------------------------------------------

    def iterate(self, root: Node) -> Iteration:
        """Select a free leaf, expand it and roll out, judge and embed, back up.

        While it runs, its path carries a pending visit (a virtual loss), so
        iterations running beside it pick other leaves.
        """
        path = yield from self.select(root)
        if path is None:
            return False
        add_pending(path, 1)
        run = LeafRun(
            text=self.backend.decode(self.tokens_of(path[1:])),
            first_call=self.cost.forward_calls,
            last_call=0,
            value=None,
        )
        self.step.leaves.append(run)
        try:
            rollout = yield from self.expand(path)
            run.last_call = self.cost.forward_calls
            nodes = path[1:]
            response = self.backend.decode(self.answer + self.tokens_of(nodes) + list(rollout))
            texts = [
                self.backend.decode(self.tokens_of(nodes[i:]) + list(rollout))
                for i in range(len(nodes))
            ]
            embed = Embed(texts, nodes) if nodes else None
            assessed = yield Assess(Judge(self.prompt, [self.stops.cut(response)]), embed)
            value = check_score(assessed.values[0], "the evaluator")
            fold = assessed.fold
            if fold is not None:
                fold.apply()
        finally:  # backed up below, or abandoned when its step closed before it was done
            add_pending(path, -1)
            run.last_call = run.last_call or self.cost.forward_calls
        run.value = value
        backup(path, value, self.bounds)
        if fold is not None:
            self.step.similarity_updates += similarity_update(
                fold, value, self.config.similarity_threshold, self.config.similarity_weight
            )
        return True

    def select(self, root: Node) -> Generator[Work, Any, list[Node] | None]:
        """The PUCT path to a free leaf, widening hopeless nodes on the way down.

        A node on the path whose children are alike and all bad gets one more
        child first (dynamic node addition), then the path is chosen again.
        """
        tried: set[int] = set()  # one try per node and iteration, added or not
        while True:
            path = select_leaf(root, self.config.c_puct, self.bounds, self.config.pending_value)
            if path is None:
                return None
            for depth in range(1, len(path)):
                node = path[depth - 1]
                if id(node) not in tried and not node.busy and self.needs_children(path[:depth]):
                    tried.add(id(node))
                    yield from self.add_child(path[:depth])
                    break
            else:
                return path

    def expand(self, path: list[Node]) -> Generator[Work, Any, tuple[int, ...]]:
        """Give the leaf its children and roll one sample on for the judge.

        Both are one unit of work. Returns the rollout tokens.
        """
        leaf = path[-1]
        if leaf.terminal:
            return ()
        request = self.expand_request(path)
        leaf.busy = True
        try:
            expansion: Expansion = yield Expand(
                self.states(path),
                request,
                self.generator_for(path, leaf.fn),
                key=expand_key(self.seed, self.answer, path, request),
            )
        finally:
            leaf.busy = False
        children = self.make_children(path, expansion.proposals)
        leaf.children.extend(children)
        assign_priors(children, request.length == 1, self.config.root_noise)
        self.step.nodes_expanded += bool(children)
        return expansion.rollout

    def expand_request(self, path: list[Node]) -> ExpandRequest:
        """What expanding the last node of ``path`` asks of the backend."""
        config = self.config
        length = self.set_length(path)
        single = length == 1
        return ExpandRequest(
            length=length,
            mode="top" if single else "sample",
            count=config.num_children if single else config.samples_per_expansion,
            keep=None if single else config.num_children - 1,
            greedy=not single,
            top_k=config.top_k,
            temperature=config.temperature,
            rollout_tokens=self.rollout_budget(path),
            rollout_until=config.rollout_until,
            rollout_temperature=config.rollout_temperature,
        )

    def prefetch(self, known: Mapping[ExpandKey, Expansion | None], running: int) -> list[Expand]:
        """Expansions of the leaves the search is likely to visit next (``speculative_leaves``).

        ``known``: this step's prefetched expansions, done or (None) still
        decoding, ``running`` of them. An iteration uses one only when it asks
        for the same key, so nothing is decided by the guesses
        (:mod:`~rain_search.speculation`).
        """
        room = self.config.speculative_leaves - running
        if room <= 0 or self.closing or self.root is None:
            return []
        return guess_expansions(self, self.root, known, room)

    def needs_children(self, path: list[Node]) -> bool:
        node = path[-1]
        return needs_more_children(
            node,
            self.set_length(path),
            self.config.dynamic_variance_threshold,
            self.config.max_children,
        )

    def add_child(self, path: list[Node]) -> Generator[Work, Any, None]:
        """Dynamic node addition: widen a node whose children are alike and all bad.

        As in the reference, one try adds at most one child: the next top
        token for 1-token sets, one sampled set otherwise (nothing when the
        sample repeats a sibling); the siblings keep their priors. A node with
        a single child got it because every sample repeated it, so another
        sample would most likely repeat it too: its new child starts with the
        most likely first token no child starts with, then is sampled on.
        """
        node = path[-1]
        length = self.set_length(path)
        request = ExpandRequest(
            length=length,
            mode="top" if length == 1 or len(node.children) == 1 else "sample",
            count=1,
            keep=1,
            exclude=[child.token_ids for child in node.children],
            top_k=self.config.top_k,
            temperature=self.config.temperature,
        )
        node.busy = True
        try:
            expansion = yield Expand(
                self.states(path), request, self.generator_for(path, -len(node.children))
            )
        finally:
            node.busy = False
        for child in self.make_children(path, expansion.proposals):
            node.children.append(child)
            add_prior(node, child, self.config.root_noise)
            self.step.nodes_expanded += 1

    def make_children(self, path: list[Node], proposals: Sequence[Proposal]) -> list[Node]:
        """Nodes for the proposals below the last node of ``path`` (not yet attached)."""
        parent = path[-1]
        prefix = self.answer + self.tokens_of(path[1:])
        return [
            Node(
                proposal.token_ids,
                parent,
                parent.depth + 1,
                log_prob=proposal.log_prob,
                greedy=proposal.greedy,
                state=proposal.state,
                finish=self.stops.reason(
                    prefix + list(proposal.token_ids),
                    self.backend.eos_token_ids,
                    self.config.max_new_tokens,
                ),
            )
            for proposal in proposals
        ]

    # -- helpers -------------------------------------------------------------------

    def generator_for(self, path: list[Node], visit: int) -> torch.Generator:
        """The random stream of one piece of work, keyed by (seed, node, visit).

        Keyed by where it is drawn rather than taken from one stream, so what a
        leaf proposes does not depend on which other leaves or searches ran
        before it or beside it. Always a CPU generator: its numbers are drawn
        ahead in one call per expansion and read on the host without a device
        sync, and an answer's numbers are the same on every device.
        """
        key = repr((self.seed, self.answer, self.tokens_of(path[1:]), visit)).encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
        return make_generator(seed, "cpu")

    def states(self, path: list[Node]) -> list[StateT]:
        """The backend's states along ``path``, root first (what :class:`Expand` carries)."""
        return [node.state for node in path]

    def set_length(self, path: list[Node]) -> int:
        """Length of the token sets below the last node of ``path``, within the budget."""
        return min(self.config.set_length(path[-1].depth + 1), self.tokens_left(path))

    def tokens_left(self, path: list[Node]) -> int:
        """Answer tokens still allowed below the last node of ``path``."""
        return self.config.max_new_tokens - len(self.answer) - len(self.tokens_of(path[1:]))

    def rollout_budget(self, path: list[Node]) -> int:
        """Tokens the rollout below ``path`` may take (0: the judge reads the leaf as is).

        As in the reference, a text that already ends a clause is not rolled
        on (with the punctuation rule), and a rollout is bounded only by the
        answer's budget unless ``rollout_max_tokens`` caps it.
        """
        config = self.config
        if config.rollout_until == "punctuation" and self.ends_clause(path):
            return 0
        left = self.tokens_left(path)
        return left if config.rollout_max_tokens is None else min(left, config.rollout_max_tokens)

    def ends_clause(self, path: list[Node]) -> bool:
        """Does the text so far (prompt, answer and path) end with a punctuation mark?"""
        tail = (self.prompt_ids + self.answer + self.tokens_of(path[1:]))[-8:]
        return self.backend.decode(tail).endswith(PUNCTUATION)

    @staticmethod
    def tokens_of(nodes: Sequence[Node]) -> list[int]:
        return [token for node in nodes for token in node.token_ids]


@dataclass(eq=False)
class Commit:
    """A committed step the search may still take back, and what it needs to go back."""

    root: Node  # the step's root; its state is the prefix before the step
    chosen: Node
    answer: list[int]  # the answer before the step
    step: StepProgress
    stats: StepStats  # held back from the reader until the next step commits
    siblings: list[Node] = field(init=False)
    chosen_then: Visits = field(init=False)  # the chosen child's statistics at the commit

    def __post_init__(self) -> None:
        self.siblings = [child for child in self.root.children if child is not self.chosen]
        self.chosen_then = Visits.of(self.chosen)
