"""Scoring text with a causal LM through an evaluation template.

The template's fixed part (instruction and few-shot examples) is the same for
every judgment, so it is encoded once and its key/value cache reused; each
judgment encodes only the part of the conversation not already cached and the
question, in both option orders, as one batch. The score is read from the
next-token probabilities of the two option labels, whose ids are found
through the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rain_search.backends.hf import KV, cache_rows, make_cache, trim_kv
from rain_search.errors import PromptError, TemplateError
from rain_search.stats import Counters
from rain_search.templates import EvalTemplate

ORDERS = (True, False)
"""Good option first, then swapped: the two orders cancel position bias."""


def label_token_id(tokenizer: PreTrainedTokenizerBase, prefix: str, label: str) -> int:
    """The single token that follows ``prefix`` when the text continues with ``label``."""
    before = tokenizer.encode(prefix, add_special_tokens=False)
    after = tokenizer.encode(prefix + label, add_special_tokens=False)
    if after[: len(before)] != before or len(after) != len(before) + 1:
        pieces = tokenizer.convert_ids_to_tokens(after[len(before) - 1 :])
        raise TemplateError(
            f"option label {label!r} is not a single token after {prefix!r} for this tokenizer "
            f"(it encodes as {pieces}); use short labels such as 'A' and 'B'"
        )
    return after[-1]


class HFJudge:
    """Scores (prompt, response) pairs in [-1, 1] with one template on one model.

    A judgment is laid out as *fixed part, conversation, question*: the fixed
    part's cache is computed once, the question (in both option orders) is a
    fixed suffix, and the conversation is cached by token prefix, so judging
    the next candidate of a search re-reads only where its text differs from
    the last one (the prompt and the committed answer are shared).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: EvalTemplate,
        counters: Counters,
        *,
        votes: str = "soft",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.counters = counters
        self.votes = votes
        self.label_ids = tuple(
            label_token_id(tokenizer, template.answer_prefix, label) for label in template.labels
        )
        self.fixed_ids = tokenizer.encode(template.fixed_text(), add_special_tokens=True)
        self.question_ids = [
            tokenizer.encode(template.question_text(good_first), add_special_tokens=False)
            for good_first in ORDERS
        ]
        self._fixed: KV | None = None
        self._last: tuple[list[int], KV] = ([], ())  # conversation ids, cache of fixed + them

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def fixed_cache(self) -> KV:
        """Keys and values of the template's fixed part, encoded on first use."""
        if self._fixed is None:
            cache = DynamicCache()
            self.counters.count_forward(1, len(self.fixed_ids))
            self.model(
                input_ids=torch.tensor([self.fixed_ids], device=self.device),
                past_key_values=cache,
                logits_to_keep=1,
            )
            self._fixed = cache_rows(cache, 0, 0, len(self.fixed_ids))
        return self._fixed

    def score(self, prompt: str, responses: Sequence[str]) -> list[float]:
        """One score per response: +1 surely good, -1 surely bad."""
        return [self._score_one(prompt, response) for response in responses]

    def conversation_ids(self, prompt: str, response: str) -> list[int]:
        text = self.template.conversation_text(prompt, response)
        return self.tokenizer.encode(text, add_special_tokens=False)

    @torch.inference_mode()
    def _score_one(self, prompt: str, response: str) -> float:
        """Both option orders as one batch of two rows over the cached prefix.

        Rows are right-padded: with causal attention a real token never sees
        the padding after it, so no mask is needed; each row's answer is read
        at its own last real position.
        """
        conversation = self.conversation_ids(prompt, response)
        self._check_length(len(conversation))
        kv, reused = self._cached_prefix(conversation)
        delta = conversation[reused:]
        rows = [delta + question for question in self.question_ids]
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=self.device)
        cache = make_cache(kv, len(rows))
        self.counters.count_forward(len(rows), width)
        last = torch.tensor([[len(row) - 1] for row in rows], device=self.device)
        # Project only each row's last position onto the vocabulary.
        logits = self.model(
            input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=last
        ).logits[:, 0]
        end = len(self.fixed_ids) + len(conversation)
        self._last = (conversation, cache_rows(cache, 0, 0, end))
        first_label = logits[:, list(self.label_ids)].float().softmax(-1)[:, 0].tolist()
        # Row 0 puts the good option first (label 0), row 1 second (label 1).
        return self._combine(first_label[0], 1.0 - first_label[1])

    def _cached_prefix(self, conversation: list[int]) -> tuple[KV, int]:
        """Cache of the fixed part plus the longest cached start of ``conversation``."""
        last_ids, last_kv = self._last
        shared = 0
        for mine, theirs in zip(conversation, last_ids, strict=False):
            if mine != theirs:
                break
            shared += 1
        if shared == 0:
            return self.fixed_cache(), 0
        return trim_kv(last_kv, len(self.fixed_ids) + shared), shared

    def _combine(self, good_first: float, good_second: float) -> float:
        if self.votes == "hard":
            return (_vote(good_first) + _vote(good_second)) / 2
        return good_first + good_second - 1.0

    def _check_length(self, conversation_tokens: int) -> None:
        window = getattr(self.model.config, "max_position_embeddings", None)
        longest = len(self.fixed_ids) + conversation_tokens + max(len(q) for q in self.question_ids)
        if window is not None and longest > window:
            raise PromptError(
                f"the judge prompt is {longest} tokens but the judge model's context window is "
                f"{window}; shorten the prompt, lower max_new_tokens or use a template with fewer "
                "few-shot examples"
            )


def _vote(good_probability: float) -> int:
    """A hard vote: +1 for good, -1 for bad, 0 when the model is exactly undecided."""
    return (good_probability > 0.5) - (good_probability < 0.5)
