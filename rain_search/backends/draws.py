"""One call's tokens for every row at once: grouped by distribution, one host copy.

Every row of a decoder call draws its next token from its own job's
distribution (top-k and temperature) with its own job's uniform number, or
takes the most likely token, or a fixed one. Rows drawn from the same kind of
distribution are cut and inverted together whatever their job: each operation
is row-wise, so each row gets what drawing it alone gives, and the work is a
few operations per kind per call rather than per row. Tokens and their
log-probs come back to the host in one copy (one device sync per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rain_search.backends.proposals import Sampling, sampling


@dataclass
class DrawRow:
    """How one row draws: which row of the log-probs, from what, with what."""

    source: int  # row of the log-probs tensor
    top_k: int
    temperature: float
    uniform: float = 0.0  # its job's number for this draw (unused when greedy or fixed)
    greedy: bool = False
    fixed: int = -1  # a token given in advance (``top`` mode's first tokens); -1: none


def draw_rows(log_probs: torch.Tensor, rows: Sequence[DrawRow]) -> list[tuple[int, float]]:
    """(token, log-prob under the row's sampling distribution) for each of ``rows``.

    ``log_probs`` is (sources, vocab) at temperature 1. The rows' numbers go to
    the device in one copy (grouped by kind, so each kind is a slice of it) and
    the results come back in one.
    """
    if not rows:
        return []
    groups: dict[tuple[int, float], list[int]] = {}
    for number, row in enumerate(rows):
        groups.setdefault((row.top_k, row.temperature), []).append(number)
    order = [number for members in groups.values() for number in members]
    table = torch.tensor(  # (rows, 4): source, uniform, greedy, fixed, in group order
        [[r.source, r.uniform, r.greedy, r.fixed] for r in (rows[n] for n in order)],
        dtype=torch.float64,
    ).to(log_probs.device)
    parts: list[torch.Tensor] = []
    start = 0
    for (top_k, temperature), members in groups.items():
        part = table[start : start + len(members)]
        start += len(members)
        dist = sampling(log_probs[part[:, 0].long()], top_k, temperature)
        picks = _picks(dist, [rows[number] for number in members], temperature, part)
        parts.append(torch.stack([picks.double(), dist.log_prob(picks).double()]))
    tokens, scores = torch.cat(parts, dim=1).tolist()
    out: list[tuple[int, float]] = [(0, 0.0)] * len(rows)
    for number, token, score in zip(order, tokens, scores, strict=True):
        out[number] = (int(token), score)
    return out


def _picks(
    dist: Sampling, rows: Sequence[DrawRow], temperature: float, table: torch.Tensor
) -> torch.Tensor:
    """Each row's token: fixed, most likely (greedy or temperature 0), or inverted.

    ``table`` holds the rows' (source, uniform, greedy, fixed) on the device.
    """
    sampled = temperature != 0.0 and not all(row.greedy or row.fixed >= 0 for row in rows)
    if sampled:
        picks = dist.invert(table[:, 1:2])
        if any(row.greedy for row in rows):
            picks = torch.where(table[:, 2].bool(), dist.most_likely(), picks)
    else:
        picks = dist.most_likely()
    if any(row.fixed >= 0 for row in rows):
        fixed = table[:, 3].long()
        picks = torch.where(fixed >= 0, fixed, picks)
    return picks
