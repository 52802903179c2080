"""Run a search's iterations one at a time with no engine: for tests of the policy alone."""

from __future__ import annotations

from rain_search.policy import StepProgress, TreeSearch
from rain_search.tree import Node, fold_embeddings
from rain_search.work import Assessed, Expand, Iteration


def drive(search: TreeSearch, iteration: Iteration) -> bool:
    """Run one iteration to its end, answering its work directly (no engine)."""
    reply: object = None
    while True:
        try:
            work = iteration.send(reply)
        except StopIteration as stop:
            return bool(stop.value)
        if isinstance(work, Expand):
            reply = search.backend.expand(work.path, work.request, work.generator)
        else:
            values = search.evaluator.score(work.judge.prompt, work.judge.texts)
            fold = None
            if work.embed is not None:
                vectors = search.embedder.embed(work.embed.texts).unbind()
                (fold,) = fold_embeddings([(work.embed.nodes, vectors)])
            reply = Assessed(values, fold)


def search_once(search: TreeSearch, root: Node) -> tuple[int, bool]:
    """One step's iterations from ``root``, one at a time, without the commit.

    Returns the fresh iterations and whether the early stop fired.
    """
    search.root, search.step = root, StepProgress(inherited=int(root.fn))
    while (iteration := search.next_iteration()) is not None:
        search.iteration_done(drive(search, iteration))
    return search.step.fresh, search.step.stopped_early
