"""The search without a shared cache: every candidate and judgment re-reads its whole text.

This is how a straightforward RAIN implementation runs (and how the reference
one does): each candidate set and each rollout is a separate ``generate`` call
on the full text so far, and each judgment encodes the whole judge prompt, one
option order at a time. It is the baseline the benchmarks compare against,
and a fallback for models whose cache cannot be cut and joined along a tree
(``RainGenerator(..., kv_cache=False)``). Same search, same counters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from rain_search.backends.base import ExpandRequest, Expansion, Proposal
from rain_search.backends.hf import CausalLMBackend
from rain_search.backends.judge import HFJudge
from rain_search.backends.proposals import (
    choose,
    distinct,
    first_tokens,
    rollout_ends,
    sample_top_k,
)

Chooser = Callable[[torch.Tensor, int], tuple[int, float]]
"""Picks the next token from (1, vocab) log-probs at a step: the token and its log-prob."""


@dataclass
class TextState:
    """A node as its full token sequence (prompt included) and the next-token log-probs."""

    ids: tuple[int, ...]
    next_log_probs: torch.Tensor


class ReencodeBackend(CausalLMBackend[TextState]):
    """The same proposing rules as :class:`HFBackend`, with no cache kept between calls."""

    def start(self, prompt_ids: Sequence[int]) -> TextState:
        ids = tuple(prompt_ids)
        return TextState(ids, self._generate(ids, 0, lambda log_probs, step: (0, 0.0))[2])

    def advance(self, root: TextState, child: TextState) -> TextState:
        return child

    def expand(
        self, path: Sequence[TextState], request: ExpandRequest, generator: torch.Generator
    ) -> Expansion:
        """Each child, then the rollout, as its own full-text generation."""
        leaf = path[-1]
        first, greedy_rows = first_tokens(leaf.next_log_probs, request)
        proposals = []
        for row, greedy in enumerate(greedy_rows):
            fixed = first[row : row + 1] if first is not None else None
            chooser = self._candidate_chooser(fixed, greedy, request, generator)
            tokens, token_log_probs, next_log_probs = self._generate(
                leaf.ids, request.length, chooser
            )
            state = TextState(leaf.ids + tuple(tokens), next_log_probs)
            proposals.append(Proposal(tuple(tokens), tuple(token_log_probs), greedy, state))
        rollout: tuple[int, ...] = ()
        if request.rollout_tokens > 0:

            def sample(log_probs: torch.Tensor, step: int) -> tuple[int, float]:
                token = sample_top_k(log_probs, 0, request.rollout_temperature, generator)[0]
                return int(token), 0.0

            rollout = tuple(
                self._generate(
                    leaf.ids,
                    request.rollout_tokens,
                    sample,
                    lambda t, n: rollout_ends(t, n, request, self.eos_token_ids, self.ends_clause),
                )[0]
            )
        return Expansion(distinct(proposals, request, self.eos_token_ids, self._trim), rollout)

    @torch.inference_mode()
    def _generate(
        self,
        ids: Sequence[int],
        count: int,
        choose: Chooser,
        ends: Callable[[int, int], bool] = lambda token, length: False,
    ) -> tuple[list[int], list[float], torch.Tensor]:
        """Encode ``ids`` from scratch, then decode ``count`` tokens with a fresh cache.

        Returns the tokens, their log-probs as ``choose`` scored them, and the
        log-probs after the last one fed. Stops early when ``ends`` says so.
        """
        cache = DynamicCache()
        log_probs = self.forward(torch.tensor([list(ids)], device=self.device), cache)
        tokens: list[int] = []
        token_log_probs: list[float] = []
        while len(tokens) < count:
            token, log_prob = choose(log_probs, len(tokens))
            tokens.append(token)
            token_log_probs.append(log_prob)
            if ends(token, len(tokens)):
                break
            log_probs = self.forward(torch.tensor([[token]], device=self.device), cache)
        return tokens, token_log_probs, log_probs[0]

    def _candidate_chooser(
        self,
        first: torch.Tensor | None,
        greedy: bool,
        request: ExpandRequest,
        generator: torch.Generator,
    ) -> Chooser:
        """One candidate row's choices, made exactly as the cached backend makes them."""
        mask = torch.tensor([greedy], device=self.device)

        def pick(log_probs: torch.Tensor, step: int) -> tuple[int, float]:
            picks, picked = choose(log_probs, first, mask, request, step, generator)
            return int(picks[0]), float(picked[0])

        return pick

    def _trim(self, state: TextState, drop: int) -> TextState:
        return TextState(state.ids[: len(state.ids) - drop], state.next_log_probs)


class ReencodeJudge(HFJudge):
    """:class:`HFJudge` that encodes the whole judge prompt for every order of every response."""

    def _score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self._score_one(prompt, response) for prompt, response in pairs]

    @torch.inference_mode()
    def _score_one(self, prompt: str, response: str) -> float:
        good = []
        for good_first, ids in zip(self.orders, self.judgment_ids(prompt, response), strict=True):
            self.counters.count_forward(1, len(ids))
            logits = self.model(
                input_ids=torch.tensor([ids], device=self.device), logits_to_keep=1
            ).logits[0, -1]
            first = float(logits[list(self.label_ids)].float().softmax(-1)[0])
            good.append(first if good_first else 1.0 - first)
        return self._combine(good)
