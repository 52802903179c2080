"""Tree and cache memory stay bounded as the answer grows."""

from __future__ import annotations

import gc

from rain_search.backends.store import context_length
from rain_search.policy import TreeSearch
from rain_search.search import steps_alone
from rain_search.tree import count_nodes


def test_live_nodes_and_cached_tokens_stay_bounded(generator, monkeypatch) -> None:
    # A random model samples <eos> now and then; with no end token the answer runs to its length.
    monkeypatch.setattr(generator.backend, "eos_token_ids", frozenset())
    config = generator.config.merged(max_new_tokens=300, temperature=2.0)
    prompt_ids, judge_prompt = generator.encode("Tell me a long story.", None)
    search = TreeSearch(
        generator.backend, generator.evaluator, generator.embedder, config, judge_prompt
    )
    # Each step runs at most T + min_fresh iterations, each adding at most max_children nodes.
    node_bound = 1 + (config.max_iterations + config.min_fresh_iterations) * config.max_children
    longest_set = max(config.token_set_schedule)
    for step in steps_alone(search, prompt_ids):
        root = search.root
        nodes = count_nodes(root)
        cached = sum(context_length(node.state.kv) for node in root.walk() if node is not root)
        assert nodes <= node_bound and step.tree_size <= node_bound
        assert cached <= nodes * longest_set
        if search.result is None:  # committed: the new root's cache is prompt plus answer
            assert context_length(root.state.kv) == len(prompt_ids) + len(search.answer)
        if len(search.answer) % 50 < longest_set:  # the store hands back what dropped nodes held
            gc.collect()
            held = cached + context_length(root.state.kv) + held_for_rewind(search)
            assert generator.backend.store.live <= held
    assert search.result.completion_tokens == config.max_new_tokens, "the answer grew long"


def held_for_rewind(search: TreeSearch) -> int:
    """Positions of the step the search may still take back (``fast`` holds one): the
    committed child's siblings and their subtrees, kept for a rewind."""
    if search.held is None:
        return 0
    return sum(
        context_length(node.state.kv) for sibling in search.held.siblings for node in sibling.walk()
    )
