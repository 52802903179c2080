"""One call's tokens for every row at once: grouped by distribution, one host copy.

Every row of a decoder call draws its next token from its own job's
distribution (top-k and temperature) with its own job's uniform number, or
takes the most likely token, or a fixed one. Rows drawn from the same kind of
distribution are cut and inverted together whatever their job: each operation
is row-wise, so each row gets what drawing it alone gives, and the work is a
few operations per kind per call rather than per row. A job hands in all its
rows of a kind at once (:meth:`DrawPlan.add`, columns extended by slices, no
object per row), and tokens and their log-probs come back to the host in one
copy (one device sync per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

from rain_search.backends.proposals import Sampling, sampling

OwnerT = TypeVar("OwnerT")
Kind = tuple[int, float]
"""(top_k, temperature) of a distribution: rows of one kind are drawn together."""


@dataclass
class _Group(Generic[OwnerT]):
    """One kind's rows, as columns: whose row, which log-probs row, and how it draws."""

    owners: list[OwnerT] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # each row's place among all rows added
    sources: list[int] = field(default_factory=list)  # rows of the log-probs tensor
    uniforms: list[float] = field(default_factory=list)  # unused when greedy or fixed
    greedy: list[bool] = field(default_factory=list)
    fixed: list[int] = field(default_factory=list)  # a token given in advance; -1: none


class DrawPlan(Generic[OwnerT]):
    """The rows one call draws, grouped by kind as they are added."""

    def __init__(self) -> None:
        self._groups: dict[Kind, _Group[OwnerT]] = {}
        self._rows = 0

    def add(
        self,
        kind: Kind,
        owners: Sequence[OwnerT],
        sources: Sequence[int],
        uniforms: Sequence[float] | None = None,
        greedy: Sequence[bool] | None = None,
        fixed: Sequence[int] | None = None,
    ) -> None:
        """Rows of one kind: ``owners[i]`` draws from log-probs row ``sources[i]`` with
        ``uniforms[i]`` (None: takes the most likely token, or its ``fixed`` one)."""
        group = self._groups.setdefault(kind, _Group())
        count = len(owners)
        group.owners += owners
        group.order += range(self._rows, self._rows + count)
        self._rows += count
        group.sources += sources
        group.uniforms += [0.0] * count if uniforms is None else uniforms
        group.greedy += [False] * count if greedy is None else greedy
        group.fixed += [-1] * count if fixed is None else fixed

    def draw(self, log_probs: torch.Tensor) -> list[tuple[OwnerT, int, float]]:
        """(owner, token, log-prob under the row's sampling distribution) for every row,
        in the order the rows were added.

        ``log_probs`` is (sources, vocab) at temperature 1. The rows' numbers go to
        the device in one copy (group after group, so each group is a slice of it)
        and the results come back in one.
        """
        groups = [(kind, group) for kind, group in self._groups.items() if group.owners]
        if not groups:
            return []
        columns = [
            [value for _, group in groups for value in getattr(group, name)]
            for name in ("sources", "uniforms", "greedy", "fixed")
        ]
        table = torch.tensor(columns, dtype=torch.float64).to(log_probs.device)  # (4, rows)
        parts: list[torch.Tensor] = []
        start = 0
        for (top_k, temperature), group in groups:
            part = table[:, start : start + len(group.owners)]
            start += len(group.owners)
            dist = sampling(log_probs, top_k, temperature, rows=part[0].long())
            picks = _picks(dist, group, temperature, part)
            parts.append(torch.stack([picks.double(), dist.log_prob(picks).double()]))
        tokens, scores = torch.cat(parts, dim=1).tolist()
        out: list[tuple[OwnerT, int, float]] = [None] * self._rows  # type: ignore[list-item]
        places = (place for _, group in groups for place in group.order)
        owners = (owner for _, group in groups for owner in group.owners)
        for place, owner, token, score in zip(places, owners, tokens, scores, strict=True):
            out[place] = (owner, int(token), score)
        return out


def _picks(
    dist: Sampling, group: _Group[OwnerT], temperature: float, table: torch.Tensor
) -> torch.Tensor:
    """Each row's token: fixed, most likely (greedy or temperature 0), or inverted.

    ``table`` holds the rows' (source, uniform, greedy, fixed) columns on the device.
    """
    fixed = any(token >= 0 for token in group.fixed)
    greedy = any(group.greedy)
    sampled = temperature != 0.0 and not all(
        g or f >= 0 for g, f in zip(group.greedy, group.fixed, strict=True)
    )
    if sampled:
        picks = dist.invert(table[1][:, None])
        if greedy:
            picks = torch.where(table[2].bool(), dist.most_likely(), picks)
    else:
        picks = dist.most_likely()
    if fixed:
        tokens = table[3].long()
        picks = torch.where(tokens >= 0, tokens, picks)
    return picks
