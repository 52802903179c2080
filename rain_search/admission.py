"""How many searches the engine lets into its forward calls at once.

Every search handed to the engine used to start at once, so a 100-prompt
``generate_batch`` put every search's leaves into every call: with the
``fast`` preset 32 prompts made 1,104-row calls and took 8 GB more memory on
the embedded 135M model, and were slower than when fewer ran at once (a CPU
call's cost grows with its rows). As in vLLM's scheduler, searches
wait in a queue and are admitted, first come first served, while the live
ones' worst-case rows and key/value positions fit a budget; one search is
always admitted when none is live, however large, so nothing waits forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rain_search.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

CPU_ROWS = 320
"""Rows per call on a CPU: eight ``fast`` searches (40 rows each at K = 8). 32 prompts of
``fast`` (8 tokens) on 2 cores took 37.8 s and +2.5 GB with 320 rows, 46.5 s and +1.5 GB
with 128, 51.8 s and +7.9 GB with no budget (1,104 rows a call)."""
GPU_ROWS = 4096
"""Rows per call on a GPU at most. A small model's call costs its kernel launches, not its
rows: 64 ``fast`` searches of the embedded 135M model on an H200 (bf16, same code) made
149 tokens/s with 1,024 rows (25 searches in the calls at a time) and 201-280 with 4,096
(all 64), the same answers either way. Fewer when the rows' logits would not fit
``GPU_ROW_SHARE`` of the free memory (:func:`gpu_rows`)."""
GPU_ROW_SHARE = 0.1
"""Share of the GPU memory free at start-up one call's rows may take beyond their cache:
the logits and what sampling makes of them, ``ROW_COPIES`` float copies of the vocabulary."""
ROW_COPIES = 6
CPU_KV_BYTES = 4 * 2**30
"""Key/value memory the live searches may reach on a CPU."""
GPU_KV_SHARE = 0.5
"""Share of the GPU memory free at start-up the live searches' keys and values may take."""


@dataclass(frozen=True)
class Footprint:
    """The most one search can hold in the decoder at once."""

    rows: int  # rows of its parallel leaves' candidates and rollouts
    kv_tokens: int  # cache positions those rows reach: rows x (prompt + answer)


@dataclass(frozen=True)
class Budget:
    """Rows and key/value positions the live searches' footprints may add up to."""

    rows: int
    kv_tokens: int

    def __post_init__(self) -> None:
        if self.rows < 1 or self.kv_tokens < 1:
            raise ConfigError(
                f"the engine's batch budget must be positive (got {self.rows} rows, "
                f"{self.kv_tokens} key/value tokens); raise max_batch_rows / max_batch_kv_tokens"
            )

    def admits(self, live: list[Footprint], new: Footprint) -> bool:
        """Whether ``new`` fits beside ``live`` (always when nothing is live)."""
        if not live:
            return True
        rows = sum(f.rows for f in live) + new.rows
        tokens = sum(f.kv_tokens for f in live) + new.kv_tokens
        return rows <= self.rows and tokens <= self.kv_tokens


def default_budget(
    config: PretrainedConfig, device: torch.device, rows: int | None, kv_tokens: int | None
) -> Budget:
    """``rows`` and ``kv_tokens`` where given, else sized for the device and the model."""
    on_gpu = device.type == "cuda"
    free = float(torch.cuda.mem_get_info(device)[0]) if on_gpu else 0.0
    if kv_tokens is None:
        memory = free * GPU_KV_SHARE if on_gpu else CPU_KV_BYTES
        kv_tokens = max(1, int(memory // bytes_per_token(config, on_gpu)))
    if rows is None:
        rows = gpu_rows(config, free) if on_gpu else CPU_ROWS
    return Budget(rows=rows, kv_tokens=kv_tokens)


def gpu_rows(config: PretrainedConfig, free_bytes: float) -> int:
    """``GPU_ROWS``, or fewer when that many rows' logits would crowd the free memory.

    A row's call output is a vocabulary of logits, a float copy, its log-softmax and
    the sampling's temporaries: with a 128k vocabulary 4,096 rows are ~12 GB, so on a
    24 GB card beside an 8B model's weights the budget falls to a few hundred rows.
    """
    vocab = getattr(language_config(config), "vocab_size", None) or 32_000
    fit = int(free_bytes * GPU_ROW_SHARE // (ROW_COPIES * 4 * vocab))
    return max(1, min(GPU_ROWS, fit))


def bytes_per_token(config: PretrainedConfig, on_gpu: bool) -> int:
    """Keys and values of one position over every layer (2 bytes a number on a GPU, else 4)."""
    text = language_config(config)
    layers = getattr(text, "num_hidden_layers", 32)
    heads = getattr(text, "num_attention_heads", 32)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or getattr(text, "hidden_size", 4096) // heads
    return 2 * layers * kv_heads * head_dim * (2 if on_gpu else 4)


def language_config(config: PretrainedConfig) -> PretrainedConfig:
    """The language model's part of ``config`` (a vision-language model nests it)."""
    text: PretrainedConfig = getattr(config, "text_config", None) or config
    return text
