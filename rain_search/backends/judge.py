"""Scoring text with a causal LM through an evaluation template.

The template's fixed part (instruction and few-shot examples) is the same for
every judgment, so it is encoded once and its key/value cache reused; each
judgment encodes only the conversation and the question, in both option
orders, as one batch. The score is read from the next-token probabilities of
the two option labels, whose ids are found through the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rain_search.backends.hf import KV, cache_rows, make_cache
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
    """Scores (prompt, response) pairs in [-1, 1] with one template on one model."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: EvalTemplate,
        counters: Counters,
        *,
        votes: str = "soft",
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.counters = counters
        self.votes = votes
        self.batch_size = batch_size
        self.label_ids = tuple(
            label_token_id(tokenizer, template.answer_prefix, label) for label in template.labels
        )
        self._fixed: KV | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def fixed_cache(self) -> KV:
        """Keys and values of the template's fixed part, encoded on first use."""
        if self._fixed is None:
            ids = self.tokenizer.encode(self.template.fixed_text(), add_special_tokens=True)
            cache = DynamicCache()
            self.counters.count_forward(1, len(ids))
            self.model(
                input_ids=torch.tensor([ids], device=self.device),
                past_key_values=cache,
                logits_to_keep=1,
            )
            self._fixed = cache_rows(cache, 0, 0, len(ids))
        return self._fixed

    def score(self, prompt: str, responses: Sequence[str]) -> list[float]:
        """One score per response: +1 surely good, -1 surely bad."""
        rows = [
            self.tokenizer.encode(
                self.template.variable_text(prompt, response, good_first), add_special_tokens=False
            )
            for response in responses
            for good_first in ORDERS
        ]
        self._check_length(rows)
        good_probs: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            good_probs.extend(self._good_probabilities(rows[start : start + self.batch_size]))
        return [
            self._combine(good_probs[i], good_probs[i + 1]) for i in range(0, len(good_probs), 2)
        ]

    @torch.inference_mode()
    def _good_probabilities(self, rows: list[list[int]]) -> list[float]:
        """P(good label | good label or bad label) for each row.

        Rows are right-padded: with causal attention a real token never sees
        the padding after it, so no mask is needed; each row's answer is read
        at its own last real position.
        """
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=self.device)
        cache = make_cache(self.fixed_cache(), len(rows))
        self.counters.count_forward(len(rows), width)
        last = torch.tensor([[len(row) - 1] for row in rows], device=self.device)
        # Project only each row's last position onto the vocabulary.
        logits = self.model(
            input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=last
        ).logits[:, 0]
        label_logits = logits[:, list(self.label_ids)]
        first_label = label_logits.float().softmax(-1)[:, 0].tolist()
        # Row 2i puts the good option first (label 0), row 2i+1 second (label 1).
        return [p if i % 2 == 0 else 1.0 - p for i, p in enumerate(first_label)]

    def _combine(self, good_first: float, good_second: float) -> float:
        if self.votes == "hard":
            return (_vote(good_first) + _vote(good_second)) / 2
        return good_first + good_second - 1.0

    def _check_length(self, rows: list[list[int]]) -> None:
        window = getattr(self.model.config, "max_position_embeddings", None)
        longest = self.fixed_cache()[0][0].shape[-2] + max(len(row) for row in rows)
        if window is not None and longest > window:
            raise PromptError(
                f"the judge prompt is {longest} tokens but the judge model's context window is "
                f"{window}; shorten the prompt, lower max_new_tokens or use a template with fewer "
                "few-shot examples"
            )


def _vote(good_probability: float) -> int:
    """A hard vote: +1 for good, -1 for bad, 0 when the model is exactly undecided."""
    return (good_probability > 0.5) - (good_probability < 0.5)
