"""The rules for proposing token sets and ending rollouts, shared by every decoder.

The one-leaf backends (:class:`~rain_search.backends.hf.HFBackend`,
:class:`~rain_search.backends.reencode.ReencodeBackend`) and the slot decoder
that runs many leaves in one call must propose alike: the same first tokens,
the same draws from the same generator, the same cut at EOS and the same
dedup, the same rollout end. They all call these functions, so there is one
copy of each rule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rain_search.backends.base import PUNCTUATION, ExpandRequest, Proposal

Trim = Callable[[Any, int], Any]
"""A backend's state without its last n tokens."""


@dataclass
class Sampling:
    """Rows' sampling distribution: top-k of ``log_probs / T``, renormalised (k=0: no cut).

    With a cut it is kept on its support: ``log_probs`` (rows, k) and the
    token ``ids`` (rows, k) they belong to, in ascending id order, so drawing
    from it reads k numbers per row instead of the whole vocabulary (a running
    sum over 50k float64 entries per row cost more than the rest of a step's
    bookkeeping). Without one, ``ids`` is None and ``log_probs`` covers the
    vocabulary. Candidate priors are read from it, as the reference does.
    """

    log_probs: torch.Tensor
    ids: torch.Tensor | None

    def most_likely(self) -> torch.Tensor:
        """(rows,) the most likely token of each row (the lowest id among equals)."""
        return self._tokens(self.log_probs.argmax(-1))

    def invert(self, uniform: torch.Tensor) -> torch.Tensor:
        """(rows,) the token each row gives at its ``uniform`` (rows, 1) number.

        Inverse CDF in token-id order: zero-probability tokens add nothing to
        the running sum, so this is the token a sum over the whole vocabulary
        would give. Rows are independent: rows of many leaves can be inverted
        in one call and each gets what it would get alone.
        """
        cdf = self.log_probs.exp().cumsum(-1, dtype=torch.float64)
        picks = torch.searchsorted(cdf, uniform * cdf[..., -1:], right=True)
        return self._tokens(picks.squeeze(-1).clamp_(max=cdf.shape[-1] - 1))

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """(rows,) log-prob of each row's token in ``tokens`` (rows,); -inf off the support."""
        if self.ids is None:
            return self.log_probs.gather(-1, tokens[:, None]).squeeze(-1)
        found = self.ids == tokens[:, None]
        return self.log_probs.masked_fill(~found, float("-inf")).amax(-1)

    def rows(self, rows: slice) -> Sampling:
        return Sampling(self.log_probs[rows], None if self.ids is None else self.ids[rows])

    def _tokens(self, positions: torch.Tensor) -> torch.Tensor:
        if self.ids is None:
            return positions
        return self.ids.gather(-1, positions[:, None]).squeeze(-1)


def sampling(
    log_probs: torch.Tensor, top_k: int, temperature: float, rows: torch.Tensor | None = None
) -> Sampling:
    """The distribution tokens are drawn from (:class:`Sampling`) for (rows, vocab) ``log_probs``
    (only its ``rows``, when given).

    Temperature 0 (greedy) reads priors at temperature 1. The cut keeps the
    k tokens ``torch.topk`` picks (at a tie on the k-th value, its choice). A cut
    for most of the rows runs on all of them and keeps its rows' k values: a
    copy of those rows' whole vocabularies first cost twice the cut (280 rows of
    49k: 27 ms against 13), and each row's top k are its own either way.
    """
    cut = 0 < top_k < log_probs.shape[-1]
    if rows is not None and not (cut and 2 * rows.shape[0] >= log_probs.shape[0]):
        log_probs, rows = log_probs[rows], None
    # x / 1.0 is x to the bit: skip a pass over every row's vocabulary at temperature 1 (or 0)
    logits = log_probs if temperature in (0.0, 1.0) else log_probs / temperature
    if cut:
        values, ids = logits.topk(top_k, dim=-1)
        if rows is not None:
            values, ids = values[rows], ids[rows]
        ids, order = ids.sort(-1)
        return Sampling(values.gather(-1, order).log_softmax(-1), ids)
    return Sampling(logits.log_softmax(-1), None)


def draw(dist: Sampling, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``dist``; temperature 0 takes the most likely.

    Inverse-CDF sampling: one uniform number per row against the running sum
    of probabilities. Over a 50k vocabulary this is several times faster on a
    CPU than ``torch.multinomial``, and tokens of probability 0 are never drawn.
    """
    if temperature == 0.0:
        return dist.most_likely()
    rows = dist.log_probs.shape[:-1]
    return dist.invert(uniforms(rows, generator, dist.log_probs.device))


def uniforms(
    rows: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """The uniform numbers :func:`draw` takes from ``generator`` for ``rows`` rows: (*rows, 1).

    Drawn where the generator lives (searches key CPU generators, so an answer's
    numbers are the same on every device), then moved to ``device``.
    """
    shape = tuple(rows) + (1,)
    numbers = torch.rand(shape, generator=generator, dtype=torch.float64, device=generator.device)
    return numbers.to(device)


def sample_top_k(
    log_probs: torch.Tensor, top_k: int, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """One token per row from the top-k of ``log_probs / temperature`` (k=0: no cut)."""
    return draw(sampling(log_probs, top_k, temperature), temperature, generator)


def first_tokens(
    log_probs: torch.Tensor, request: ExpandRequest
) -> tuple[torch.Tensor | None, list[bool]]:
    """Fixed first tokens for ``top`` mode, and which rows decode greedily.

    ``log_probs`` is the leaf's (vocab,) next-token distribution; the fixed
    tokens come back as a (candidates,) tensor on its device.
    """
    if request.mode == "top":
        ranked = log_probs.topk(top_ranks(request, log_probs.shape[-1])).indices.tolist()
        picks = top_picks(ranked, request)
        return torch.tensor(picks, device=log_probs.device, dtype=torch.long), [False] * len(picks)
    return None, sampled_rows(request)


def top_ranks(request: ExpandRequest, vocab: int) -> int:
    """How many of the most likely tokens ``top`` mode ranks: its count past the excluded."""
    return min(request.count + len(excluded_firsts(request)), vocab)


def top_picks(ranked: list[int], request: ExpandRequest) -> list[int]:
    """``top`` mode's first tokens: the first ``count`` of ``ranked`` not excluded."""
    excluded = excluded_firsts(request)
    return [token for token in ranked if token not in excluded][: request.count]


def excluded_firsts(request: ExpandRequest) -> set[int]:
    return {ids[0] for ids in request.exclude if ids}


def sampled_rows(request: ExpandRequest) -> list[bool]:
    """Which candidate rows of ``sample`` mode decode greedily (the greedy one first)."""
    return [True] * int(request.greedy) + [False] * request.count


def choose(
    log_probs: torch.Tensor,
    first: torch.Tensor | None,
    greedy: torch.Tensor,
    request: ExpandRequest,
    step: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each candidate row's next token and its log-prob under the sampling distribution.

    ``log_probs`` is (candidates, vocab), ``greedy`` a (candidates,) bool mask;
    both results are (candidates,). ``top`` mode's fixed tokens are scored over
    the whole vocabulary at the sampling temperature (normalised among siblings
    this is the reference's top-k renormalisation); sampled rows over the top-k.
    """
    top_k = 0 if first is not None else request.top_k
    dist = sampling(log_probs, top_k, request.temperature)
    if step == 0 and first is not None:
        picks = first
    else:
        sampled = draw(dist, request.temperature, generator)
        picks = torch.where(greedy, dist.most_likely(), sampled)
    return picks, dist.log_prob(picks)


def distinct(
    proposals: list[Proposal], request: ExpandRequest, eos_token_ids: Collection[int], trim: Trim
) -> list[Proposal]:
    """Cut each proposal after EOS, then drop duplicates and excluded sets.

    Of the sampled tries, only the first ``request.keep`` distinct ones stay.
    """
    seen = set(request.exclude)
    kept: list[Proposal] = []
    sampled = 0
    for proposal in proposals:
        cut_at_eos(proposal, eos_token_ids, trim)
        if proposal.token_ids in seen:
            continue
        if not proposal.greedy:
            if request.keep is not None and sampled >= request.keep:
                continue
            sampled += 1
        seen.add(proposal.token_ids)
        kept.append(proposal)
    return kept


def cut_at_eos(proposal: Proposal, eos_token_ids: Collection[int], trim: Trim) -> None:
    """End ``proposal`` at its first EOS: the tokens after it, their log-probs and cache go.

    The answer ends there, so what the model would say after it must not
    weigh on the set's prior.
    """
    for index, token in enumerate(proposal.token_ids):
        if token in eos_token_ids:
            drop = len(proposal.token_ids) - index - 1
            if drop:
                proposal.state = trim(proposal.state, drop)
                proposal.token_ids = proposal.token_ids[: index + 1]
                proposal.token_log_probs = proposal.token_log_probs[: index + 1]
            return


def rollout_ends(
    token: int,
    length: int,
    request: ExpandRequest,
    eos_token_ids: Collection[int],
    ends_clause: Callable[[int], bool],
) -> bool:
    """Does a rollout stop after ``token``, its ``length``-th: EOS, its budget, or punctuation."""
    if token in eos_token_ids or length >= request.rollout_tokens:
        return True
    return request.rollout_until == "punctuation" and ends_clause(token)


class ClauseEnds:
    """Which token ids end a clause (their text ends with a punctuation mark).

    The table is built on first use, one decode per vocabulary entry, and then
    read per drawn token: a rollout checks every token it draws.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._table: list[bool] | None = None  # read per drawn token: a list, not a tensor

    def __call__(self, token: int) -> bool:
        if self._table is None:
            self._table = punctuation_table(self.tokenizer, len(self.tokenizer)).tolist()
        return token < len(self._table) and self._table[token]


def punctuation_table(tokenizer: PreTrainedTokenizerBase, size: int) -> torch.Tensor:
    """Boolean per token id: does its decoded text end with a punctuation mark?"""
    table = torch.zeros(size, dtype=torch.bool)
    for token_id in range(size):
        table[token_id] = str(tokenizer.decode([token_id])).endswith(PUNCTUATION)
    return table
