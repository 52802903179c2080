"""Scoring text with a causal LM through an evaluation template.

The template's fixed part (instruction and few-shot examples) is the same for
every judgment, so it is encoded once and its key/value cache reused; each
forward call encodes only what differs from the last judgment of the same
conversation, for up to ``max_rows`` rows (every response asked together in
both option orders on a GPU, one response at a time on a CPU). The score is
read from the next-token probabilities of the two option labels, whose ids
are found through the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rain_search.backends.kv import KV, cache_rows, join_kv, make_cache, trim_kv
from rain_search.errors import PromptError, TemplateError
from rain_search.stats import Counters
from rain_search.templates import EvalTemplate
from rain_search.untrusted import encode_segments

RECENT_SLOTS = 8
"""Recent judgments whose conversation cache is kept: a few concurrent searches' worth."""

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


@dataclass(eq=False)
class Recent:
    """A recent judgment's first row and its keys and values after the fixed part."""

    ids: list[int]
    kv: KV


class HFJudge:
    """Scores (prompt, response) pairs in [-1, 1] with one template on one model.

    A judgment is the template rendered as one text (*fixed part,
    conversation, question*) and tokenised as one text (the prompt and
    response with special-token parsing off), so the model reads
    exactly the tokens the text stands for: tokenising the pieces apart would
    add a spurious leading-space token at every join on SentencePiece
    (LLaMA-style) tokenizers. The keys and values of the fixed part, and of
    the last judgment of each of a few recent conversations, are kept; the
    next judgment re-reads only from the first token where it differs from
    the closest of them (the instruction, few-shot examples, prompt and
    committed answer are shared), both option orders of up to
    ``max_rows // orders`` responses as one batch (:func:`default_judge_rows`).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: EvalTemplate,
        counters: Counters,
        *,
        votes: str = "hard",
        swap_labels: bool = True,
        max_rows: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.counters = counters
        self.votes = votes
        self.orders = ORDERS if swap_labels else ORDERS[:1]
        self.max_rows = max_rows or default_judge_rows(model.device, len(self.orders))
        self.label_ids = tuple(
            label_token_id(tokenizer, template.answer_prefix, label) for label in template.labels
        )
        self.fixed_ids = tokenizer.encode(template.fixed_text(), add_special_tokens=True)
        self._fixed: KV | None = None  # the fixed part's cache, encoded once
        self._recent: list[Recent] = []  # the latest judgment first

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def fixed_cache(self) -> KV:
        """Keys and values of the template's fixed part, encoded once before the first judgment."""
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
        return self.score_pairs([(prompt, response) for response in responses])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (prompt, response) pair, in order, whatever the prompts.

        The pairs are judged together, up to ``max_rows`` judge rows (one per
        response and option order) in one forward call: a round of parallel
        leaves, of every search this judge serves, costs one sequential call,
        not one per leaf or per search. Pairs of one prompt go into the same
        calls where they can, so a call's rows share its prompt's tokens.
        """
        per_call = max(1, self.max_rows // len(self.orders))
        first = {prompt: i for i, (prompt, _) in reversed(list(enumerate(pairs)))}
        order = sorted(range(len(pairs)), key=lambda i: first[pairs[i][0]])
        scores = [0.0] * len(pairs)
        for start in range(0, len(order), per_call):
            chunk = order[start : start + per_call]
            for i, score in zip(chunk, self._score_batch([pairs[i] for i in chunk]), strict=True):
                scores[i] = score
        return scores

    def judgment_ids(self, prompt: str, response: str) -> list[list[int]]:
        """The whole judge prompt's token ids, one row per option order asked."""
        rows = [
            encode_segments(
                self.tokenizer,
                self.template.render_segments(prompt, response, good_first),
                add_special_tokens=True,
            )
            for good_first in self.orders
        ]
        self._check_length(max(len(row) for row in rows))
        return rows

    @torch.inference_mode()
    def _score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Every option order of every pair as one batch over their cached common prefix.

        Rows are right-padded: with causal attention a real token never sees
        the padding after it, so no mask is needed; each row's answer is read
        at its own last real position.
        """
        rows = [row for prompt, response in pairs for row in self.judgment_ids(prompt, response)]
        kv, reused = self._cached_prefix(rows)
        deltas = [row[reused:] for row in rows]
        width = max(len(delta) for delta in deltas)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([d + [pad] * (width - len(d)) for d in deltas], device=self.device)
        cache = make_cache(kv, len(rows))
        self.counters.count_forward(len(rows), width)
        last = torch.tensor([[len(d) - 1] for d in deltas], device=self.device)
        # Project only each row's last position onto the vocabulary.
        logits = self.model(
            input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=last
        ).logits[:, 0]
        self._remember(rows[0], cache)
        first_label = logits[:, list(self.label_ids)].float().softmax(-1)[:, 0].tolist()
        # In each response's rows, the first puts the good option first (label 0), the next second.
        orders = len(self.orders)
        good = [p if self.orders[i % orders] else 1.0 - p for i, p in enumerate(first_label)]
        return [self._combine(good[i : i + orders]) for i in range(0, len(good), orders)]

    def _cached_prefix(self, rows: list[list[int]]) -> tuple[KV, int]:
        """Cache of the longest start shared by every row and a recent judgment.

        At least one token of each row is left to feed, so its logits exist.
        """
        fixed = self.fixed_cache()
        limit = min(len(row) for row in rows) - 1
        fixed_shared = min(common_prefix(row, self.fixed_ids) for row in rows)
        best, shared = None, min(fixed_shared, limit)
        start = len(self.fixed_ids) if fixed_shared == len(self.fixed_ids) else 0
        for recent in self._recent:  # every slot starts with the fixed part: compare after it
            reach = min(min(common_prefix(row, recent.ids, start) for row in rows), limit)
            if reach > max(shared, len(self.fixed_ids)):
                best, shared = recent, reach
        if best is None:
            return (trim_kv(fixed, shared) if shared else ()), shared
        tail = trim_kv(best.kv, shared - len(self.fixed_ids))
        return join_kv([fixed, tail]), shared

    def _remember(self, ids: list[int], cache: DynamicCache) -> None:
        """Keep this judgment's conversation for the next judgments that share it.

        The ``RECENT_SLOTS`` latest judgments are kept (least recently made
        goes first), so searches judged in turn each find their own prompt
        and answer so far instead of re-reading them after every other
        search's judgment. A slot holds only the positions after the fixed
        part, which all share.
        """
        start = len(self.fixed_ids)
        if len(ids) <= start or ids[:start] != self.fixed_ids:
            return
        kept = [slot for slot in self._recent if slot.ids != ids]
        self._recent = [Recent(ids, cache_rows(cache, 0, start, len(ids))), *kept][:RECENT_SLOTS]

    def _combine(self, good: list[float]) -> float:
        """Probabilities of the good option, one per order asked, as a score in [-1, 1]."""
        if self.votes == "hard":
            return sum(_vote(p) for p in good) / len(good)
        return 2.0 * sum(good) / len(good) - 1.0

    def _check_length(self, tokens: int) -> None:
        window = getattr(self.model.config, "max_position_embeddings", None)
        if window is not None and tokens > window:
            raise PromptError(
                f"the judge prompt is {tokens} tokens but the judge model's context window is "
                f"{window}; shorten the prompt, lower max_new_tokens or use a template with fewer "
                "few-shot examples"
            )


def default_judge_rows(device: torch.device, orders: int) -> int:
    """Judge rows per forward call: a round's responses together on a GPU, one by one on a CPU.

    On a GPU a call costs about the same for 2 rows as for 16, so a round of
    leaves is judged in one sequential call. A CPU is compute-bound: 8
    responses as one 16-row call took 6.3 s on the embedded model against
    4.9 s one by one, since one by one each response re-reads only what
    differs from the one before it, and the batch only what all share.
    """
    return 16 if device.type == "cuda" else orders


def common_prefix(a: Sequence[int], b: Sequence[int], start: int = 0) -> int:
    """How many leading tokens ``a`` and ``b`` share (the first ``start`` known equal)."""
    shared = start
    for mine, theirs in zip(a[start:], b[start:], strict=False):
        if mine != theirs:
            break
        shared += 1
    return shared


def _vote(good_probability: float) -> int:
    """A hard vote: +1 for good, -1 for bad, 0 when the model is exactly undecided."""
    return (good_probability > 0.5) - (good_probability < 0.5)
