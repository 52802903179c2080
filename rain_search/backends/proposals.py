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
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rain_search.backends.base import PUNCTUATION, ExpandRequest, Proposal

Trim = Callable[[Any, int], Any]
"""A backend's state without its last n tokens."""


def sampling_log_probs(log_probs: torch.Tensor, top_k: int, temperature: float) -> torch.Tensor:
    """Log-probs of the distribution tokens are drawn from: top-k of ``log_probs / T``.

    Renormalised over the top-k (k=0: no cut), -inf elsewhere. Candidate
    priors are read from it, as the reference does. Temperature 0 (greedy)
    reads priors at temperature 1.
    """
    logits = log_probs / (temperature or 1.0)
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits.log_softmax(-1)


def draw(dist: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``dist`` (log-probs); temperature 0 takes the most likely.

    Inverse-CDF sampling: one uniform number per row against the running sum
    of probabilities. Over a 50k vocabulary this is several times faster on a
    CPU than ``torch.multinomial``, and tokens of probability 0 are never drawn.
    """
    if temperature == 0.0:
        return dist.argmax(-1)
    cdf = dist.exp().cumsum(-1, dtype=torch.float64)
    uniform = torch.rand(
        cdf.shape[:-1] + (1,), generator=generator, dtype=torch.float64, device=cdf.device
    )
    picks = torch.searchsorted(cdf, uniform * cdf[..., -1:], right=True)
    return picks.squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def sample_top_k(
    log_probs: torch.Tensor, top_k: int, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """One token per row from the top-k of ``log_probs / temperature`` (k=0: no cut)."""
    return draw(sampling_log_probs(log_probs, top_k, temperature), temperature, generator)


def first_tokens(
    log_probs: torch.Tensor, request: ExpandRequest
) -> tuple[torch.Tensor | None, list[bool]]:
    """Fixed first tokens for ``top`` mode, and which rows decode greedily.

    ``log_probs`` is the leaf's (vocab,) next-token distribution; the fixed
    tokens come back as a (candidates,) tensor on its device.
    """
    if request.mode == "top":
        excluded = {ids[0] for ids in request.exclude if ids}
        ranked = log_probs.topk(min(request.count + len(excluded), log_probs.shape[-1]))
        picks = [int(t) for t in ranked.indices if int(t) not in excluded][: request.count]
        return torch.tensor(picks, device=log_probs.device, dtype=torch.long), [False] * len(picks)
    return None, [True] * int(request.greedy) + [False] * request.count


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
    dist = sampling_log_probs(log_probs, top_k, request.temperature)
    if step == 0 and first is not None:
        picks = first
    else:
        sampled = draw(dist, request.temperature, generator)
        picks = torch.where(greedy, dist.argmax(-1), sampled)
    return picks, dist.gather(-1, picks[:, None]).squeeze(-1)


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
        self._table: torch.Tensor | None = None

    def __call__(self, token: int) -> bool:
        if self._table is None:
            self._table = punctuation_table(self.tokenizer, len(self.tokenizer))
        return token < len(self._table) and bool(self._table[token])


def punctuation_table(tokenizer: PreTrainedTokenizerBase, size: int) -> torch.Tensor:
    """Boolean per token id: does its decoded text end with a punctuation mark?"""
    table = torch.zeros(size, dtype=torch.bool)
    for token_id in range(size):
        table[token_id] = str(tokenizer.decode([token_id])).endswith(PUNCTUATION)
    return table
