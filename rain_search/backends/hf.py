"""Hugging Face ``transformers`` backend with a tree-shared key/value cache.

Each tree node stores only the keys and values of *its own* tokens plus the
next-token distribution after them. A node's full context is the committed
prefix's cache followed by the small deltas along its path, so no token is
ever encoded twice: proposing children costs one batched forward call per
token of the set, whatever the prefix length, and committing a step is a
concatenation, not a re-encode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rain_search.backends.base import PUNCTUATION, ExpandRequest, Expansion, Proposal
from rain_search.errors import ModelLoadError
from rain_search.stats import Counters

StateT = TypeVar("StateT")
"""A backend's per-node state."""

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per layer (keys, values), each shaped (batch, heads, tokens, head_dim)."""


@dataclass
class NodeState:
    """Cache of a node's own tokens and the log-probabilities of the next token."""

    kv: KV
    next_log_probs: torch.Tensor  # (vocab,), temperature 1


def concat_kv(states: Sequence[NodeState]) -> KV:
    """The full context of the last state: its ancestors' caches end to end."""
    if len(states) == 1:
        return states[0].kv
    layers = zip(*(state.kv for state in states), strict=True)
    return tuple(
        (torch.cat([k for k, _ in layer], dim=-2), torch.cat([v for _, v in layer], dim=-2))
        for layer in layers
    )


def trim_kv(kv: KV, tokens: int) -> KV:
    """The first ``tokens`` positions of ``kv``."""
    return tuple((k[:, :, :tokens], v[:, :, :tokens]) for k, v in kv)


def make_cache(kv: KV, batch: int) -> DynamicCache:
    """A cache holding ``kv`` repeated ``batch`` times (views: no copy until extended)."""
    if not kv:
        return DynamicCache()
    return DynamicCache(
        ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv]
    )


def cache_rows(cache: DynamicCache, row: int, start: int, stop: int) -> KV:
    """Copy of one row's cache over token positions [start, stop)."""
    return tuple(
        (keys[row : row + 1, :, start:stop].clone(), values[row : row + 1, :, start:stop].clone())
        for keys, values in map(layer_tensors, cache.layers)
    )


def layer_tensors(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values; models whose cache has none cannot share a tree cache."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise ModelLoadError(
            f"this model's cache layers ({type(layer).__name__}) hold no key/value tensors, so "
            "the search cannot share them along its tree; use RainGenerator(..., kv_cache=False)"
        )
    return keys, values


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


class CausalLMBackend(Generic[StateT]):
    """What every backend on a causal LM shares: proposing rules, rollout rule, plain decoding.

    Subclasses decide what a node's ``state`` is (a slice of the tree-shared
    cache, or the whole token sequence) and how to extend it.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.counters = Counters()
        self.eos_token_ids = _eos_ids(model, tokenizer)
        self._punctuation: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        cache: DynamicCache,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Feed (batch, tokens) on top of ``cache``; log-probs after the last token.

        Rows padded to one cache length need ``attention_mask`` (batch, cached
        + new tokens) and ``position_ids`` (batch, new tokens): the defaults
        would count the padding as text.
        """
        self.counters.count_forward(*input_ids.shape)
        out = self.model(
            input_ids=input_ids,
            past_key_values=cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        # with a device_map the logits come from the last layer's device: bring them home
        return out.logits[:, -1].float().log_softmax(-1).to(self.device)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    # -- proposing ---------------------------------------------------------------

    def _first_tokens(
        self, log_probs: torch.Tensor, request: ExpandRequest
    ) -> tuple[torch.Tensor | None, list[bool]]:
        """Fixed first tokens for ``top`` mode, and which rows decode greedily."""
        if request.mode == "top":
            excluded = {ids[0] for ids in request.exclude if ids}
            ranked = log_probs.topk(min(request.count + len(excluded), log_probs.shape[-1]))
            picks = [int(t) for t in ranked.indices if int(t) not in excluded][: request.count]
            return torch.tensor(picks, device=self.device, dtype=torch.long), [False] * len(picks)
        return None, [True] * int(request.greedy) + [False] * request.count

    @staticmethod
    def _choose(
        log_probs: torch.Tensor,
        first: torch.Tensor | None,
        greedy: torch.Tensor,
        request: ExpandRequest,
        step: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate row's next token and its log-prob under the sampling distribution.

        ``top`` mode's fixed tokens are scored over the whole vocabulary at the
        sampling temperature (normalised among siblings this is the
        reference's top-k renormalisation); sampled rows over the top-k.
        """
        top_k = 0 if first is not None else request.top_k
        dist = sampling_log_probs(log_probs, top_k, request.temperature)
        if step == 0 and first is not None:
            picks = first
        else:
            sampled = draw(dist, request.temperature, generator)
            picks = torch.where(greedy, dist.argmax(-1), sampled)
        return picks, dist.gather(-1, picks[:, None]).squeeze(-1)

    def _distinct(self, proposals: list[Proposal], request: ExpandRequest) -> list[Proposal]:
        """Cut each proposal after EOS, then drop duplicates and excluded sets.

        Of the sampled tries, only the first ``request.keep`` distinct ones stay.
        """
        seen = set(request.exclude)
        kept: list[Proposal] = []
        sampled = 0
        for proposal in proposals:
            self._cut_at_eos(proposal)
            if proposal.token_ids in seen:
                continue
            if not proposal.greedy:
                if request.keep is not None and sampled >= request.keep:
                    continue
                sampled += 1
            seen.add(proposal.token_ids)
            kept.append(proposal)
        return kept

    def _trim(self, state: StateT, drop: int) -> StateT:
        """``state`` without its last ``drop`` tokens."""
        raise NotImplementedError

    def _cut_at_eos(self, proposal: Proposal) -> None:
        """End ``proposal`` at its first EOS: the tokens after it, their log-probs and cache go.

        The answer ends there, so what the model would say after it must not
        weigh on the set's prior.
        """
        for index, token in enumerate(proposal.token_ids):
            if token in self.eos_token_ids:
                drop = len(proposal.token_ids) - index - 1
                if drop:
                    proposal.state = self._trim(proposal.state, drop)
                    proposal.token_ids = proposal.token_ids[: index + 1]
                    proposal.token_log_probs = proposal.token_log_probs[: index + 1]
                return

    def _rollout_ends(self, token: int, length: int, request: ExpandRequest) -> bool:
        if token in self.eos_token_ids or length >= request.rollout_tokens:
            return True
        return request.rollout_until == "punctuation" and self.ends_clause(token)

    def ends_clause(self, token: int) -> bool:
        """Does this token's text end with a clause-ending mark? (table built once)"""
        if self._punctuation is None:
            self._punctuation = punctuation_table(self.tokenizer, len(self.tokenizer))
        return token < len(self._punctuation) and bool(self._punctuation[token])

    # -- plain decoding, for comparison ------------------------------------------

    def vanilla(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        generator: torch.Generator,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        should_stop: Callable[[list[int]], bool] = lambda ids: False,
    ) -> list[int]:
        """KV-cached greedy or sampled decoding with the same counters as the search."""
        cache = DynamicCache()
        ids = torch.tensor([list(prompt_ids)], device=self.device)
        log_probs = self.forward(ids, cache)
        output: list[int] = []
        while True:
            if do_sample:
                token = int(sample_top_k(log_probs, top_k, temperature, generator)[0])
            else:
                token = int(log_probs[0].argmax())
            output.append(token)
            if token in self.eos_token_ids or len(output) >= max_new_tokens or should_stop(output):
                return output
            log_probs = self.forward(torch.tensor([[token]], device=self.device), cache)


class HFBackend(CausalLMBackend[NodeState]):
    """Runs the search's model work on a causal LM, CPU or CUDA, with the tree-shared cache."""

    def start(self, prompt_ids: Sequence[int]) -> NodeState:
        cache = DynamicCache()
        ids = torch.tensor([list(prompt_ids)], device=self.device)
        log_probs = self.forward(ids, cache)
        return NodeState(cache_rows(cache, 0, 0, ids.shape[1]), log_probs[0])

    def advance(self, root: NodeState, child: NodeState) -> NodeState:
        return NodeState(concat_kv([root, child]), child.next_log_probs)

    def expand(
        self, path: Sequence[NodeState], request: ExpandRequest, generator: torch.Generator
    ) -> Expansion:
        """Propose children (and roll one sample on) for one leaf, on its own.

        The engine decodes many leaves together in a :class:`SlotDecoder`; this
        runs one through the same decoder, so both propose alike.
        """
        from rain_search.backends.slots import SlotDecoder

        decoder = SlotDecoder(self)
        job = decoder.add(path, request, generator, Counters())
        while decoder.live:
            decoder.step()
        assert job.result is not None
        return job.result

    def _trim(self, state: NodeState, drop: int) -> NodeState:
        """``state`` without its last ``drop`` tokens."""
        kept = state.kv[0][0].shape[-2] - drop
        return NodeState(trim_kv(state.kv, kept), state.next_log_probs)


def punctuation_table(tokenizer: PreTrainedTokenizerBase, size: int) -> torch.Tensor:
    """Boolean per token id: does its decoded text end with a punctuation mark?"""
    table = torch.zeros(size, dtype=torch.bool)
    for token_id in range(size):
        table[token_id] = str(tokenizer.decode([token_id])).endswith(PUNCTUATION)
    return table


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(source)
    return frozenset(ids)
