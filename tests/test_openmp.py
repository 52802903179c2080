"""A thread that stops running torch work gives its idle OpenMP team back.

Two idle teams make every parallel region of every forward call wait for a
wake-up (backends/openmp.py). The effect is a time, which tests do not assert;
what is checked is its cause: the worker threads of the team that torch's
parallel region started on a thread are gone once the thread is done with torch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
import torch

from rain_search.backends.openmp import _pauses, release_idle_workers
from rain_search.search import RainGenerator

needs_gomp = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or torch.get_num_threads() < 2 or not _pauses(),
    reason="GNU OpenMP teams of two or more threads (Linux torch on a multi-core machine)",
)


def os_threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def start_a_team() -> None:
    """One parallel region: large enough for torch to split it over its threads."""
    torch.ones(1 << 22).mul_(2)


def team_left_after(work: Callable[[], None]) -> tuple[set[str], set[str]]:
    """On a new thread (its team lives as long as it does): the OS threads a parallel
    region started, and those of them still there after ``work``."""
    seen: list[set[str]] = []

    def run() -> None:
        before = os_threads()
        start_a_team()
        seen.append(os_threads() - before)
        work()
        seen.append(seen[0] & os_threads())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0], seen[1]


@needs_gomp
def test_releasing_frees_the_threads_team() -> None:
    team, left = team_left_after(release_idle_workers)
    assert len(team) == torch.get_num_threads() - 1
    assert left == set()
    release_idle_workers()  # nothing left to free: still fine
    start_a_team()  # and a new team starts when torch needs one
    release_idle_workers()


@needs_gomp
def test_a_reader_leaves_no_idle_team_after_its_search(generator: RainGenerator) -> None:
    def search() -> None:
        assert generator.generate("Hi", max_new_tokens=3).completion_tokens > 0

    team, left = team_left_after(search)
    assert team and left == set()


@needs_gomp
def test_building_a_generator_frees_the_team_its_loading_left(tiny_llama) -> None:
    model, tokenizer = tiny_llama

    def build() -> None:
        RainGenerator(model, tokenizer, "fast", evaluator=lambda text: 0.0, embedder="hidden")

    team, left = team_left_after(build)
    assert team and left == set()
