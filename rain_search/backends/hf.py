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
from typing import Generic, TypeVar

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rain_search.backends.base import ExpandRequest, Expansion
from rain_search.backends.proposals import ClauseEnds, sample_top_k
from rain_search.backends.slots import SlotDecoder
from rain_search.backends.store import KVStore, NodeState, Span, concat_kv
from rain_search.stats import Counters

StateT = TypeVar("StateT")
"""A backend's per-node state."""


class CausalLMBackend(Generic[StateT]):
    """What every backend on a causal LM shares: the forward call, clause ends, plain decoding.

    Subclasses decide what a node's ``state`` is (a slice of the tree-shared
    cache, or the whole token sequence) and how to extend it; both propose
    by the rules of :mod:`~rain_search.backends.proposals`.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.counters = Counters()
        self.eos_token_ids = _eos_ids(model, tokenizer)
        self._clause_ends = ClauseEnds(tokenizer)

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

    def ends_clause(self, token: int) -> bool:
        """Does this token's text end with a clause-ending mark? (table built once)"""
        return self._clause_ends(token)

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
    """Runs the search's model work on a causal LM, CPU or CUDA, with the tree-shared cache.

    Every node's keys and values live in one :class:`KVStore` per backend.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(model, tokenizer)
        self.store = KVStore()

    def start(self, prompt_ids: Sequence[int]) -> NodeState:
        cache = DynamicCache()
        ids = torch.tensor([list(prompt_ids)], device=self.device)
        log_probs = self.forward(ids, cache)
        (block,) = self.store.store_rows(cache, [range(ids.shape[1])])
        return NodeState((Span(block, ids.shape[1]),), log_probs[0])

    def start_many(self, prompts: Sequence[Sequence[int]]) -> list[NodeState]:
        """Encode several prompts in one forward call (left-padded, masked).

        Each prompt's state holds what :meth:`start` gives it, up to the last
        bits: a padded batch runs other kernels than one prompt alone (a search
        that must be bit for bit its solo self is started alone:
        ``batch_invariant``).
        """
        width = max(len(ids) for ids in prompts)
        rows = [[0] * (width - len(ids)) + list(ids) for ids in prompts]
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
        cache = DynamicCache()
        log_probs = self.forward(
            torch.tensor(rows, device=self.device),
            cache,
            attention_mask=mask.to(self.device),
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(self.device),
        )
        blocks = self.store.store_rows(cache, [range(width - len(ids), width) for ids in prompts])
        return [
            NodeState((Span(block, len(ids)),), after.clone())
            for ids, block, after in zip(prompts, blocks, log_probs.unbind(), strict=True)
        ]

    def advance(self, root: NodeState, child: NodeState) -> NodeState:
        return NodeState(concat_kv([root, child]), child.next_log_probs)

    def expand(
        self, path: Sequence[NodeState], request: ExpandRequest, generator: torch.Generator
    ) -> Expansion:
        """Propose children (and roll one sample on) for one leaf, on its own.

        The engine decodes many leaves together in a :class:`SlotDecoder`; this
        runs one through the same decoder, so both propose alike.
        """
        decoder = SlotDecoder(self)
        job = decoder.add(path, request, generator, Counters())
        while decoder.live:
            decoder.call()
        assert job.result is not None
        return job.result


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(source)
    return frozenset(ids)
