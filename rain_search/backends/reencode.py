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
from rain_search.backends.hf import HFBackend, sample_top_k
from rain_search.backends.judge import ORDERS, HFJudge

Chooser = Callable[[torch.Tensor], torch.Tensor]
"""Picks the next token from (1, vocab) log-probs."""


@dataclass
class TextState:
    """A node as its full token sequence (prompt included) and the next-token log-probs."""

    ids: tuple[int, ...]
    next_log_probs: torch.Tensor


class ReencodeBackend(HFBackend):
    """:class:`HFBackend` with no cache kept between calls."""

    def start(self, prompt_ids: Sequence[int]) -> TextState:
        ids = tuple(prompt_ids)
        return TextState(ids, self._generate(ids, 0, lambda _: 0)[1])

    def advance(self, root: TextState, child: TextState) -> TextState:
        return child

    def expand(
        self, path: Sequence[TextState], request: ExpandRequest, generator: torch.Generator
    ) -> Expansion:
        """Each child, then the rollout, as its own full-text generation."""
        leaf = path[-1]
        first, greedy_rows = self._first_tokens(leaf.next_log_probs, request, generator)
        proposals = []
        for row, greedy in enumerate(greedy_rows):
            if first is not None:
                tokens = [int(first[row])]
                log_prob = float(leaf.next_log_probs[tokens[0]])
                choose = self._chooser(request.top_k, request.temperature, greedy, generator)
                more, next_log_probs, extra = self._generate(
                    leaf.ids + tuple(tokens), request.length - 1, choose
                )
            else:
                choose = self._chooser(request.top_k, request.temperature, greedy, generator)
                more, next_log_probs, extra = self._generate(leaf.ids, request.length, choose)
                tokens, log_prob = [], 0.0
            tokens += more
            state = TextState(leaf.ids + tuple(tokens), next_log_probs)
            proposals.append(Proposal(tuple(tokens), log_prob + extra, greedy, state))
        rollout: tuple[int, ...] = ()
        if request.rollout_tokens > 0:
            choose = self._chooser(0, request.rollout_temperature, False, generator)
            limit = request.rollout_tokens
            rollout = tuple(
                self._generate(
                    leaf.ids, limit, choose, lambda t, n: self._rollout_ends(t, n, limit)
                )[0]
            )
        return Expansion(self._distinct(proposals, request), rollout)

    @torch.inference_mode()
    def _generate(
        self,
        ids: Sequence[int],
        count: int,
        choose: Chooser,
        ends: Callable[[int, int], bool] = lambda token, length: False,
    ) -> tuple[list[int], torch.Tensor, float]:
        """Encode ``ids`` from scratch, then decode ``count`` tokens with a fresh cache.

        Returns the tokens, the log-probs after the last one fed, and the sum
        of the chosen tokens' log-probs. Stops early when ``ends`` says so.
        """
        cache = DynamicCache()
        log_probs = self.forward(torch.tensor([list(ids)], device=self.device), cache)
        tokens: list[int] = []
        total = 0.0
        while len(tokens) < count:
            token = int(choose(log_probs))
            tokens.append(token)
            total += float(log_probs[0, token])
            if ends(token, len(tokens)):
                break
            log_probs = self.forward(torch.tensor([[token]], device=self.device), cache)
        return tokens, log_probs[0], total

    @staticmethod
    def _chooser(
        top_k: int, temperature: float, greedy: bool, generator: torch.Generator
    ) -> Chooser:
        if greedy:
            return lambda log_probs: log_probs[0].argmax()
        return lambda log_probs: sample_top_k(log_probs, top_k, temperature, generator)[0]

    def _trim(self, state: TextState, drop: int) -> TextState:
        return TextState(state.ids[: len(state.ids) - drop], state.next_log_probs)


class ReencodeJudge(HFJudge):
    """:class:`HFJudge` that encodes the whole judge prompt for every order of every response."""

    @torch.inference_mode()
    def _score_one(self, prompt: str, response: str) -> float:
        conversation = self.conversation_ids(prompt, response)
        self._check_length(len(conversation))
        good = []
        for good_first, question in zip(ORDERS, self.question_ids, strict=True):
            ids = self.fixed_ids + conversation + question
            self.counters.count_forward(1, len(ids))
            logits = self.model(
                input_ids=torch.tensor([ids], device=self.device), logits_to_keep=1
            ).logits[0, -1]
            first = float(logits[list(self.label_ids)].float().softmax(-1)[0])
            good.append(first if good_first else 1.0 - first)
        return self._combine(*good)
