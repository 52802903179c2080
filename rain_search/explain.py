"""Showing a RAIN run: the candidates each step weighed, and which one it kept.

A user sees *why* each candidate was kept or left: a candidate the model
liked (high prior) but the judge scored low gathers few visits and is left,
the committed set is the most visited one (with parallel leaves, the best
valued of the well-visited ones: ``RainConfig.commit_rule``), and a set the
search committed and then took back is shown as rewound. Every label is the
commit's own verdict (:class:`~rain_search.steps.Candidate.verdict`), never
guessed again from the numbers, so it says what the search did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rain_search.extras import require
from rain_search.steps import Candidate, LeafRun, StepStats, Verdict


class Run(Protocol):
    """What is drawn of a generation (a :class:`~rain_search.result.RainResult`)."""

    @property
    def mode(self) -> str: ...

    @property
    def finish_reason(self) -> str: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def steps(self) -> Sequence[StepStats]: ...


BAR = 12
GREY = (0.8, 0.8, 0.8)

LABELS: dict[Verdict, str] = {
    "most_visits": "✓ kept: most visits",
    "best_value": "✓ kept: best value of the well-visited",
    "overruled": "✓ kept: the rule's first pick was judged clearly worse",
    "fewer_visits": "✗ fewer visits than the kept one",
    "worse": "✗ judged worse than the kept one",
    "tied": "✗ tied with the kept one (the first is kept)",
    "few_visits": "✗ too few visits to weigh",
    "clearly_worse": "✗ judged clearly worse than a sibling: never committed",
    "unvisited": "· never visited",
    "rewound": "↶ rewound: committed, then every continuation judged bad",
}
"""What each verdict of the commit (:data:`~rain_search.steps.Verdict`) is shown as."""


def explain_text(result: Run) -> str:
    """One block per committed step, candidates sorted by visits, the kept one marked."""
    if not result.steps:
        return f"[{result.mode}] no search tree: {result.completion_tokens} tokens decoded directly"
    lines = [f"RAIN search: {len(result.steps)} steps, finish={result.finish_reason}"]
    for step in result.steps:
        early = ", early stop" if step.early_stopped else ""
        rewound = (
            f", decided again after {step.rewinds} dead end{'s' * (step.rewinds > 1)} below it"
            if step.rewinds
            else ""
        )
        lines.append(
            f"step {step.index + 1}: kept {step.text!r} after {step.iterations} iterations "
            f"({step.inherited_visits} visits inherited{early}{rewound})"
        )
        ranked = sorted(step.candidates, key=lambda c: (-c.visits, -c.value))
        most = max((c.visits for c in ranked), default=1.0) or 1.0
        shown = [*ranked, *step.rewound]
        for i, candidate in enumerate(shown):
            branch = "└─" if i == len(shown) - 1 else "├─"
            lines.append(f"  {branch} {_describe(candidate, most)}")
        if widest_round(step.leaves) > 1:
            lines.append(f"  leaves run together (calls {_rounds(step.leaves)})")
    return "\n".join(lines)


def widest_round(leaves: list[LeafRun]) -> int:
    """The most leaves whose forward calls overlapped at one time."""
    ends = sorted(
        [(leaf.first_call, 1) for leaf in leaves] + [(leaf.last_call, -1) for leaf in leaves]
    )
    widest = running = 0
    for _, change in ends:
        running += change
        widest = max(widest, running)
    return widest


def _rounds(leaves: list[LeafRun]) -> str:
    """Each leaf as ``first-last:text=value``, in the order they started."""
    parts = []
    for leaf in leaves:
        value = "abandoned" if leaf.value is None else f"{leaf.value:+.2f}"
        parts.append(f"{leaf.first_call}-{leaf.last_call} {leaf.text[-16:]!r} {value}")
    return "; ".join(parts)


def plot_rounds(result: Run, path: str) -> None:
    """One bar per leaf over the forward calls its expansion and rollout used.

    Bars stacked in one column of calls ran in the same forward calls; colour
    is the judge's value (grey: abandoned when its step closed).
    """
    matplotlib = require("matplotlib", "plot", "drawing the search's rounds")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    leaves = [leaf for step in result.steps for leaf in step.leaves]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.12 * len(leaves) + 1.5)))
    lanes: list[int] = []  # the call each lane is busy until
    for leaf in leaves:
        lane = next((i for i, end in enumerate(lanes) if end <= leaf.first_call), len(lanes))
        if lane == len(lanes):
            lanes.append(0)
        lanes[lane] = leaf.last_call + 1
        colour = GREY if leaf.value is None else _colour(leaf.value)
        width = max(leaf.last_call - leaf.first_call, 0.6)
        ax.barh(lane, width, left=leaf.first_call, color=[colour], edgecolor="black", lw=0.3)
    for step in result.steps[1:]:
        start = min((leaf.first_call for leaf in step.leaves), default=None)
        if start is not None:
            ax.axvline(start, color="black", lw=0.5, ls=":")
    ax.set_xlabel("the search's forward calls")
    ax.set_ylabel("leaf slot")
    ax.set_title("RAIN rounds: leaves that shared forward calls (colour = value, grey = abandoned)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _describe(candidate: Candidate, most_visits: float) -> str:
    bar = "█" * min(BAR, round(BAR * candidate.visits / most_visits))
    return (
        f"{candidate.text!r:<28} visits {candidate.visits:5.1f} {bar:<{BAR}} "
        f"value {candidate.value:+.2f} prior {candidate.prior:.2f}  {LABELS[candidate.verdict]}"
    )


def plot_tree(result: Run, path: str) -> None:
    """Steps left to right; each candidate a dot sized by visits and coloured by value."""
    matplotlib = require("matplotlib", "plot", "drawing the search tree (--explain-image)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result.steps
    height = max((len(s.candidates) for s in steps), default=1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(steps)), max(3.0, 0.45 * height + 1.5)))
    kept_xy = []
    for x, step in enumerate(steps):
        ranked = sorted(step.candidates, key=lambda c: (-c.visits, -c.value))
        most = max((c.visits for c in ranked), default=1.0) or 1.0
        for y, candidate in enumerate(ranked):
            ax.scatter(
                x,
                -y,
                s=60 + 500 * candidate.visits / most,
                c=[[*(_colour(candidate.value) if candidate.real_visits else GREY)]],
                edgecolors="black" if candidate.chosen else "none",
                linewidths=2,
                zorder=3,
            )
            label = candidate.text.replace("\n", "\\n")[:18]
            ax.annotate(
                label,
                (x, -y),
                xytext=(14, -3),
                textcoords="offset points",
                fontsize=7,
                fontweight="bold" if candidate.chosen else "normal",
            )
            if candidate.chosen:
                kept_xy.append((x, -y))
    if kept_xy:
        xs, ys = zip(*kept_xy, strict=True)
        ax.plot(xs, ys, color="black", linewidth=1, zorder=2)
    ax.set_xticks(range(len(steps)), [f"step {s.index + 1}" for s in steps], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(steps) - 0.2)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.set_title(
        "RAIN search: candidates per step (size = visits, colour = value "
        "red -1 … green +1, grey = unvisited, outlined = kept)",
        fontsize=9,
    )
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _colour(value: float) -> tuple[float, float, float]:
    """Red at -1, yellow at 0, green at +1."""
    t = (max(-1.0, min(1.0, value)) + 1) / 2
    return (min(1.0, 2 * (1 - t)), min(1.0, 2 * t), 0.2)
