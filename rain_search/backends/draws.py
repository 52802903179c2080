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

    ``log_probs`` is (sources, vocab) at temperature 1.
    """
    if not rows:
        return []
    groups: dict[tuple[int, float], list[int]] = {}
    for number, row in enumerate(rows):
        groups.setdefault((row.top_k, row.temperature), []).append(number)
    order: list[int] = []
    parts: list[torch.Tensor] = []
    device = log_probs.device
    for (top_k, temperature), members in groups.items():
        chosen = [rows[number] for number in members]
        index = torch.tensor([row.source for row in chosen], device=device)
        dist = sampling(log_probs[index], top_k, temperature)
        picks = _picks(dist, chosen, temperature, device)
        parts.append(torch.stack([picks.double(), dist.log_prob(picks).double()]))
        order += members
    tokens, scores = torch.cat(parts, dim=1).tolist()
    out: list[tuple[int, float]] = [(0, 0.0)] * len(rows)
    for number, token, score in zip(order, tokens, scores, strict=True):
        out[number] = (int(token), score)
    return out


def _picks(
    dist: Sampling, rows: Sequence[DrawRow], temperature: float, device: torch.device
) -> torch.Tensor:
    """Each row's token: fixed, most likely (greedy or temperature 0), or inverted."""
    sampled = temperature != 0.0 and not all(row.greedy or row.fixed >= 0 for row in rows)
    if sampled:
        uniform = torch.tensor([[row.uniform] for row in rows], dtype=torch.float64, device=device)
        picks = dist.invert(uniform)
        if any(row.greedy for row in rows):
            greedy = torch.tensor([row.greedy for row in rows], device=device)
            picks = torch.where(greedy, dist.most_likely(), picks)
    else:
        picks = dist.most_likely()
    if any(row.fixed >= 0 for row in rows):
        fixed = torch.tensor([row.fixed for row in rows], device=device)
        picks = torch.where(fixed >= 0, fixed, picks)
    return picks
