"""The engine: one owner of the model's calls for every live search.

Searches ask for work (:mod:`rain_search.work`); the engine answers it in as
few forward calls as it can. It knows a search only through the
:class:`~rain_search.work.Policy` protocol (iterations out, their ends in, a
step to commit), not the tree search's internals. Expansions from every
running iteration of every search share the slot decoder's calls: each
call advances all live rows by one token, and a row whose set or rollout is
done leaves at once, its leaf judged, embedded and backed up, and its search's
next leaf joins the next call (fixed slots refilled as work finishes, as in
vLLM's scheduler). Judging and embedding are answered for all searches at
once: one call per judge and one per embedder for all the texts at hand, cut
back into each search's share. A search may also ask for expansions ahead of its
iterations (``speculative_leaves``); the engine decodes them in the same
calls and gives one to the iteration that asks for the same key, which is how
one leaf at a time gets parallel work without deciding differently.

Searches wait in a queue until their worst-case rows and key/value
positions fit the engine's :class:`~rain_search.admission.Budget` beside the
live ones, so a long batch of prompts never balloons one call.

Each search's work is the same whatever runs beside it: it starts its
iterations as soon as it has room (``parallel_leaves``) and draws from random
streams keyed by where it draws; its judge and embedder answers are cached by
text, so a score or vector is the same whichever search's call made it. Its
rows' numbers can still differ in the last bits with the calls' shapes (how
many rows, how much padding: kernels pick their reduction order by shape),
which in half precision moves a sampled token now and then;
``batch_invariant=True`` gives every search calls of its own
(:class:`~rain_search.backends.decoders.IsolatedDecoder`, and judge and
embedder calls of its own texts), so its answer is its solo answer bit for
bit, at the price of the shared calls.

:class:`Scheduler` lets any number of callers, on any threads, hand an engine
searches and read their steps; the readers take turns driving it.
"""

from __future__ import annotations

import atexit
import itertools
import queue
import threading
import weakref
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from rain_search.admission import Budget, Footprint
from rain_search.backends.base import Backend
from rain_search.backends.decoders import Pending, make_decoder
from rain_search.backends.openmp import release_idle_workers
from rain_search.errors import Cancelled, EvaluatorError
from rain_search.result import StepStats
from rain_search.stats import Counters, share_out
from rain_search.tree import Fold, Visit, fold_embeddings
from rain_search.work import (
    Assess,
    Assessed,
    Embed,
    Expand,
    ExpandKey,
    Iteration,
    Judge,
    Policy,
    Reply,
    Work,
)


@dataclass(eq=False)
class Waiting:
    """An iteration and the work it waits for."""

    iteration: Iteration
    work: Work
    job: Pending | None = None


@dataclass(eq=False)
class Task:
    """One search in the engine, and what it has produced for its reader."""

    search: Policy
    prompt_ids: Sequence[int]
    steps: queue.Queue[StepStats | BaseException | None] = field(default_factory=queue.Queue)
    waiting: list[Waiting] = field(default_factory=list)
    footprint: Footprint | None = None  # set when the engine admits it
    prefetched: dict[ExpandKey, Pending] = field(default_factory=dict)  # this step's, by key
    started: bool = False
    done: bool = False


class Engine:
    """Runs searches' work on one backend; each search brings its own judge and embedder."""

    def __init__(
        self, backend: Backend[Any], budget: Budget | None = None, batch_invariant: bool = False
    ) -> None:
        self.backend = backend
        self.budget = budget
        self.batch_invariant = batch_invariant
        self.decoder = make_decoder(backend, batch_invariant)
        self.tasks: list[Task] = []  # admitted: their work is in the calls
        self.queued: deque[Task] = deque()  # waiting for room in the budget

    def solo(self, search: Policy, prompt_ids: Sequence[int]) -> Iterator[StepStats]:
        """Run one search on the caller's thread, yielding its steps."""
        task = self.add(search, prompt_ids)
        while True:
            self.run_once()
            while not task.steps.empty():
                item = task.steps.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    return
                yield item

    def add(self, search: Policy, prompt_ids: Sequence[int]) -> Task:
        task = Task(search, list(prompt_ids))
        self.queue(task)
        return task

    def queue(self, task: Task) -> None:
        self.queued.append(task)

    def run_once(self) -> None:
        """Admit what fits, settle what needs no model call, then one shared decoding call."""
        self._admit()
        self._start([task for task in self.tasks if not task.started and not task.done])
        self._settle()
        for task in self.tasks:
            self._guard(task, self._prefetch, task)
        if self.decoder.live:
            try:
                finished = self.decoder.call()
            except Exception as error:  # a failed call fails every search in it
                self._fail_all(error)
                return
            by_job = {id(w.job): (task, w) for task in self.tasks for w in task.waiting if w.job}
            for job in finished:
                if id(job) in by_job:
                    task, waiting = by_job[id(job)]
                    assert job.result is not None
                    task.waiting.remove(waiting)
                    self._guard(task, self._send, task, waiting.iteration, job.result)
            self._settle()
        self.tasks = [task for task in self.tasks if not task.done]
        self.drop_cancelled()
        if not self.tasks and not self.queued:
            self.decoder.release()

    def drop_cancelled(self) -> None:
        """End the queued searches whose readers left (at both ends of a turn, and when a
        reader leaves between turns: a turn nobody runs would leave them queued)."""
        for task in [task for task in self.queued if task.search.cancelled()]:
            self.queued.remove(task)
            self._end(task, Cancelled("the generation was cancelled"))

    def _admit(self) -> None:
        """Move queued searches into the calls, in order, while the budget holds them."""
        self.drop_cancelled()
        live = [task.footprint for task in self.tasks if task.footprint is not None]
        while self.queued:
            task = self.queued[0]
            footprint = task.search.footprint(len(task.prompt_ids))
            if self.budget is not None and not self.budget.admits(live, footprint):
                return
            self.queued.popleft()
            task.footprint = footprint
            live.append(footprint)
            self.tasks.append(task)

    # -- one search's work ---------------------------------------------------------

    def _start(self, tasks: list[Task]) -> None:
        """Encode the prompts of the searches admitted since the last turn.

        In one call for all of them when the backend can (each search is charged
        one call and its own prompt's tokens); one by one when searches must run
        exactly as alone (``batch_invariant``), or when the shared call fails (so
        the error reaches only the search whose prompt caused it).
        """
        start_many = getattr(self.backend, "start_many", None)
        if len(tasks) > 1 and start_many is not None and not self.batch_invariant:
            try:
                for chunk in prefill_chunks(tasks):
                    states = start_many([task.prompt_ids for task in chunk])
                    for task, state in zip(chunk, states, strict=True):
                        task.search.cost.count_forward(1, len(task.prompt_ids))
                        self._guard(task, self._begin, task, state)
                return
            except Exception:  # noqa: BLE001 - retried one by one below, where it is reported
                pass
        for task in tasks:
            if not task.started:
                self._guard(task, self._start_one, task)

    def _start_one(self, task: Task) -> None:
        before = self.backend.counters.copy()
        state = self.backend.start(task.prompt_ids)
        task.search.cost.add(self.backend.counters - before)
        self._begin(task, state)

    def _begin(self, task: Task, state: object) -> None:
        task.started = True
        task.search.begin(state, task.prompt_ids)

    def _settle(self) -> None:
        """Start iterations and answer judge, embed (and unbatched expand) work until
        every live iteration waits on the decoder.

        Each pass runs every search's part in the order a search alone runs
        it: start iterations, answer judging and embedding, hand out
        expansions, drop or commit. Only the middle is shared: the judge and
        embed work of all searches is answered together (:meth:`_answer`).
        """
        progress = True
        while progress:
            tasks = [task for task in self.tasks if not task.done]
            started = [bool(self._guard(task, self._start_iterations, task)) for task in tasks]
            progress = any(started) | self._answer(tasks)
            for task in tasks:
                progress |= bool(self._guard(task, self._settle_task, task))

    def _start_iterations(self, task: Task) -> bool:
        search, progressed = task.search, False
        while (iteration := search.next_iteration()) is not None:
            if not self._send(task, iteration, None):
                break  # nothing free to visit until running work comes back
            progressed = True
        return progressed

    def _settle_task(self, task: Task) -> bool:
        """Hand out the search's expansions, then drop or commit what its step allows."""
        search, progressed = task.search, False
        expands = [w for w in task.waiting if w.job is None and isinstance(w.work, Expand)]
        for waiting in expands:
            progressed = True
            self._expand(task, waiting)
        if search.closing and task.waiting:
            progressed = True
            self._abandon(task)
        if search.ready_to_commit:
            progressed = True
            self._drop_prefetched(task)  # keyed by this step's answer: no later step asks
            for step in search.finish_step():
                task.steps.put(step)
            if search.result is not None:
                task.done = True
                task.steps.put(None)
        return progressed

    def _prefetch(self, task: Task) -> None:
        """Start the expansions the search expects to ask for next (``speculative_leaves``).

        Once a turn, on the tree as the settled iterations left it, right before
        the call the guesses join: guessing after every settle pass redid the
        same picks on a tree that was still moving.
        """
        known = {key: job.result for key, job in task.prefetched.items()}
        running = sum(result is None for result in known.values())
        for work in task.search.prefetch(known, running):
            assert work.key is not None  # a prefetch is found again only by its key
            job = self.decoder.add(work.path, work.request, work.generator, task.search.cost)
            task.prefetched[work.key] = job

    def _drop_prefetched(self, task: Task) -> None:
        for job in task.prefetched.values():
            if job.result is None:
                self.decoder.cancel(job)
        task.prefetched = {}

    def _abandon(self, task: Task) -> None:
        """Drop the iterations still running when their step has what it needs.

        Only parallel leaves get here (one leaf at a time never runs past the
        step's end): their rows leave the decoder, their visits are not counted.
        """
        for waiting in task.waiting:
            if waiting.job is not None:
                self.decoder.cancel(waiting.job)
            waiting.iteration.close()
            task.search.iteration_done(False)
        task.waiting = []

    def _send(self, task: Task, iteration: Iteration, reply: Reply | None) -> bool:
        """Resume ``iteration`` with ``reply``; False if it ended without running."""
        try:
            work = iteration.send(reply)
        except StopIteration as stop:
            task.search.iteration_done(bool(stop.value))
            return bool(stop.value)
        task.waiting.append(Waiting(iteration, work))
        return True

    def _answer(self, tasks: list[Task]) -> bool:
        """Answer every search's ready leaves: one call per judge, per embedder.

        A leaf's :class:`~rain_search.work.Assess` has a judge part and an
        embed part. Parts go to groups by the object that answers them (one
        judge or embedder, however many searches share it; a judge without
        ``score_pairs`` also by prompt; each search apart if
        ``batch_invariant``), in search order, judge parts first; then each
        search's leaves are resumed in the order it asked (:meth:`_resume_assessed`).
        Returns whether there was any.
        """
        ready = {task: [split_assess(w) for w in self._ready(task)] for task in tasks}
        groups: dict[Hashable, tuple[Any, dict[Task, list[Part]]]] = {}
        for task, leaves in ready.items():
            judged = [judge for judge, _ in leaves]
            embedded = [embed for _, embed in leaves if embed is not None]
            for part in judged + embedded:
                owner, key = answerer(task.search, part.work)
                key = (key, id(task)) if self.batch_invariant else key
                groups.setdefault(key, (owner, {}))[1].setdefault(task, []).append(part)
        replies: dict[Part, PartReply] = {}
        for owner, shares in groups.values():
            live = {task: parts for task, parts in shares.items() if not task.done}
            if live:  # a search a failed group ended asks no more
                self._answer_group(owner, live, replies)
        self._resume_assessed(
            {
                task: [answered for leaf in leaves if (answered := replied(leaf, replies))]
                for task, leaves in ready.items()
            }
        )
        return bool(groups)

    def _resume_assessed(self, answered: dict[Task, list[Answered]]) -> None:
        """Resume the assessed leaves in rounds: every search's first, then every
        search's second, and so on. A round's vectors are folded into the trees in one
        pass (:func:`~rain_search.tree.fold_embeddings`), each search's leaves still in
        the order it alone folds them; if the pass fails, each search folds its own, so
        an error ends only the searches whose leaves cause it (``batch_invariant``:
        each search always folds its own)."""
        for turn in itertools.zip_longest(*answered.values()):
            leaves = [
                (task, leaf)
                for task, leaf in zip(answered, turn, strict=True)
                if leaf is not None and not task.done
            ]
            folds = self._folds([(task, leaf) for task, leaf in leaves if leaf.visit])
            for task, leaf in leaves:
                fold = folds.get(leaf.waiting)
                if leaf.visit is None or fold is not None:  # else its fold failed: it ended
                    reply = Assessed(leaf.values, fold)
                    self._guard(task, self._resume, task, [(leaf.waiting, reply)])

    def _folds(self, leaves: list[tuple[Task, Answered]]) -> dict[Waiting, Fold]:
        """The folds of one round's embedded leaves (at most one per search)."""
        if not self.batch_invariant:
            folds = shared_folds([leaf for _, leaf in leaves])
            if folds is not None:
                return {leaf.waiting: fold for (_, leaf), fold in zip(leaves, folds, strict=True)}
        out: dict[Waiting, Fold] = {}
        for task, leaf in leaves:
            fold = self._guard(task, fold_one, leaf)
            if fold:
                out[leaf.waiting] = fold
        return out

    @staticmethod
    def _ready(task: Task) -> list[Waiting]:
        """The task's leaves waiting to be judged and embedded, in the order it asked."""
        return [w for w in task.waiting if w.job is None and isinstance(w.work, Assess)]

    def _answer_group(
        self, owner: Any, shares: dict[Task, list[Part]], replies: dict[Part, PartReply]
    ) -> None:
        """One call for the group; if it fails, one call per search, so that an error
        ends exactly the searches whose own texts fail it, as it would alone."""
        try:
            replies.update(self._shared(owner, shares))
        except Exception as error:
            if len(shares) == 1:
                self._end(next(iter(shares)), error)
                return
            for task, parts in shares.items():
                answers = self._guard(task, self._shared, owner, {task: parts})
                replies.update(answers or {})

    def _shared(self, owner: Any, shares: dict[Task, list[Part]]) -> dict[Part, PartReply]:
        """Call ``owner`` once for every text of ``shares``; charge each search its share.

        What the call adds to ``owner``'s counters is split as
        :func:`~rain_search.stats.share_out` says: a search pays for the model
        work its own uncached texts needed, as it would alone. A plain
        embedder or evaluator counts nothing.
        """
        parts = [part for ps in shares.values() for part in ps]
        counters = getattr(owner, "counters", None)
        if not isinstance(counters, Counters):
            return dict(split(parts, ask(owner, [part.work for part in parts])))
        keys = [[key for part in ps for key in keys_of(part.work)] for ps in shares.values()]
        uncached = getattr(owner, "uncached", None)
        fresh = [uncached(k) if uncached else len(k) for k in keys]
        before = counters.copy()
        reply = ask(owner, [part.work for part in parts])
        parts_cost = share_out(counters - before, [len(k) for k in keys], fresh)
        for task, part_cost in zip(shares, parts_cost, strict=True):
            task.search.cost.add(part_cost)
        return dict(split(parts, reply))

    def _resume(self, task: Task, answers: list[tuple[Waiting, Reply]]) -> None:
        for waiting, reply in answers:
            task.waiting.remove(waiting)
            self._send(task, waiting.iteration, reply)

    def _expand(self, task: Task, waiting: Waiting) -> None:
        work = waiting.work
        assert isinstance(work, Expand)
        job = task.prefetched.pop(work.key, None) if work.key is not None else None
        if job is None:
            job = self.decoder.add(work.path, work.request, work.generator, task.search.cost)
        waiting.job = job
        if job.result is not None:  # done at once (a backend without slots, or a prefetch)
            task.waiting.remove(waiting)
            self._send(task, waiting.iteration, job.result)

    # -- failures --------------------------------------------------------------------

    def _guard(self, task: Task, call: Any, *args: Any) -> Any:
        """Run ``call``; an error ends only this task, and reaches its reader."""
        if task.done:
            return False
        try:
            return call(*args)
        except Exception as error:
            self._end(task, error)
            return False

    def _end(self, task: Task, error: BaseException) -> None:
        task.done = True
        self._drop_prefetched(task)
        for waiting in task.waiting:
            waiting.iteration.close()
        task.waiting = []
        task.steps.put(error)

    def cancel_all(self, why: str) -> None:
        """End every search, queued ones too, with :class:`Cancelled` (their readers see it)."""
        self.tasks += self.queued
        self.queued.clear()
        self._fail_all(Cancelled(why))
        self.tasks = []

    def _fail_all(self, error: BaseException) -> None:
        for task in self.tasks:
            if not task.done:
                self._end(task, error)
        self.decoder = make_decoder(self.backend, self.batch_invariant)


PREFILL_TOKENS = 16384
"""Padded prompt tokens one shared prefill call may hold (its attention is rows × width²)."""


def prefill_chunks(tasks: list[Task]) -> Iterator[list[Task]]:
    """The tasks in groups whose padded prompts stay under ``PREFILL_TOKENS``."""
    chunk: list[Task] = []
    width = 0
    for task in tasks:
        width = max(width, len(task.prompt_ids))
        if chunk and width * (len(chunk) + 1) > PREFILL_TOKENS:
            yield chunk
            chunk, width = [], len(task.prompt_ids)
        chunk.append(task)
    if chunk:
        yield chunk


@dataclass(frozen=True, eq=False)
class Part:
    """The judge or the embed half of a waiting leaf's :class:`~rain_search.work.Assess`:
    what one judge or embedder call answers among others."""

    waiting: Waiting
    work: Judge | Embed


PartReply = list[float] | list[torch.Tensor]  # a judge's values, or an embedder's vectors


@dataclass(frozen=True)
class Answered:
    """A leaf with its judge's values, and the visit its vectors fold into the tree
    (None: nothing to embed)."""

    waiting: Waiting
    values: list[float]
    visit: Visit | None


def split_assess(waiting: Waiting) -> tuple[Part, Part | None]:
    """A leaf's judge part, and its embed part if it has one."""
    work = waiting.work
    assert isinstance(work, Assess)
    return Part(waiting, work.judge), Part(waiting, work.embed) if work.embed else None


def replied(leaf: tuple[Part, Part | None], replies: dict[Part, PartReply]) -> Answered | None:
    """The leaf with its replies, or None if a part has none (its search ended)."""
    judge, embed = leaf
    if judge not in replies or (embed is not None and embed not in replies):
        return None
    values = cast(list[float], replies[judge])
    if embed is None:
        return Answered(judge.waiting, values, None)
    assert isinstance(embed.work, Embed)
    visit = (embed.work.nodes, cast(list[torch.Tensor], replies[embed]))
    return Answered(judge.waiting, values, visit)


def split(parts: list[Part], replies: Any) -> list[tuple[Part, PartReply]]:
    """Cut one batched reply back into each part's share, in order."""
    out, offset = [], 0
    for part in parts:
        count = len(part.work.texts)
        out.append((part, replies[offset : offset + count]))
        offset += count
    return out


def shared_folds(leaves: list[Answered]) -> list[Fold] | None:
    """The folds of one round's leaves (one per search) in one pass; None if it fails."""
    try:
        return fold_embeddings([leaf.visit for leaf in leaves if leaf.visit])
    except Exception:
        return None


def fold_one(leaf: Answered) -> Fold:
    assert leaf.visit is not None
    (fold,) = fold_embeddings([leaf.visit])
    return fold


def keys_of(work: Judge | Embed) -> list[Hashable]:
    """What the answering judge or embedder caches ``work``'s texts by."""
    if isinstance(work, Judge):
        return [(work.prompt, text) for text in work.texts]
    return list(work.texts)


def answerer(search: Policy, work: Judge | Embed) -> tuple[Any, Hashable]:
    """Who answers ``work`` for ``search``, and the key of the group it joins.

    Judge work of one judge shares a call whatever its prompt when the judge
    scores pairs (:class:`~rain_search.evaluators.PairEvaluator`), else only
    with work of the same prompt; embed work shares its embedder's call.
    """
    if isinstance(work, Embed):
        return search.embedder, ("embed", id(search.embedder))
    assert isinstance(work, Judge)
    judge = search.evaluator
    if scores_pairs(judge):
        return judge, ("judge", id(judge))
    return judge, ("judge", id(judge), work.prompt)


def ask(owner: Any, works: Sequence[Judge | Embed]) -> Any:
    """One call of ``owner`` for every text of ``works``, one reply per text, in order."""
    texts = [text for work in works for text in work.texts]
    if isinstance(works[0], Embed):
        return vector_rows(owner.embed(texts), len(texts))
    if scores_pairs(owner):
        judged = cast(list[Judge], works)
        return owner.score_pairs([(work.prompt, text) for work in judged for text in work.texts])
    return owner.score(works[0].prompt, texts)


def vector_rows(vectors: object, count: int) -> list[torch.Tensor]:
    """An embedder's reply as one vector per text (one ``unbind`` for the whole call,
    so that handing each leaf its share is list slicing)."""
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2 or len(vectors) != count:
        shape = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors)
        raise EvaluatorError(
            f"the embedder returned {shape} for {count} texts: embed(texts) must return a "
            "(len(texts), dim) tensor"
        )
    return list(vectors.unbind())


def scores_pairs(judge: object) -> bool:
    """Whether ``judge`` is a :class:`~rain_search.evaluators.PairEvaluator`, checked by
    its method: a runtime protocol check per work item cost a few percent of a turn."""
    return callable(getattr(judge, "score_pairs", None))


class Scheduler:
    """Hands searches to one engine and drives it from the threads that read them.

    There is no engine thread: a reader waiting for its next step runs the
    engine itself (one ``run_once`` at a time, for every live search) unless
    another reader is already doing so, in which case it sleeps until that
    call ends and looks at its queue again. An idle generator holds no
    thread at all. The leader gives its OpenMP team back after each turn: a
    second idle team slows every parallel region of the next leader's calls
    (:mod:`~rain_search.backends.openmp`; this, not the thread itself, was why
    torch measured 1.1-1.6x slower on a thread of its own). A search nobody
    reads waits; any reader's turn advances every search. At interpreter exit
    the next turn cancels the running searches instead of starting a forward call.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._inbox: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._turn = threading.Condition()
        self._leading = False
        self._stopping = False
        _schedulers.add(self)

    def submit(self, search: Policy, prompt_ids: Sequence[int]) -> Task:
        task = Task(search, list(prompt_ids))
        self._inbox.put(task)
        return task

    def take(self, task: Task) -> StepStats | BaseException | None:
        """The task's next item, running the engine while nobody else does."""
        while True:
            with self._turn:
                while task.steps.empty() and self._leading:
                    self._turn.wait()
                if not task.steps.empty():
                    return task.steps.get_nowait()
                self._leading = True
            try:
                self._run_once()
            finally:
                # the next turn may be another reader's: two idle teams slow both (openmp.py)
                release_idle_workers()
                with self._turn:
                    self._leading = False
                    self._turn.notify_all()

    def shutdown(self) -> None:
        """Cancel every search at the next turn (their readers see :class:`Cancelled`)."""
        self._stopping = True

    def reader_left(self) -> None:
        """Drop the queued searches whose readers left, now if no turn is running (one
        that is drops them as it ends)."""
        with self._turn:
            if not self._leading:
                self._queue_inbox()
                self.engine.drop_cancelled()

    def _queue_inbox(self) -> None:
        while not self._inbox.empty():
            self.engine.queue(self._inbox.get_nowait())

    def _run_once(self) -> None:
        engine = self.engine
        self._queue_inbox()
        if self._stopping:
            engine.cancel_all("the interpreter is exiting")
            return
        try:
            engine.run_once()
        except BaseException:  # e.g. KeyboardInterrupt inside a call: its state is torn
            engine.cancel_all("a forward call was interrupted")
            raise


_schedulers: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@atexit.register
def _stop_engines() -> None:
    for scheduler in list(_schedulers):
        scheduler.shutdown()
