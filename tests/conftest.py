"""Shared fixtures: a tiny random Llama with a character tokenizer, and the embedded model."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from benchmarks.common import char_tokenizer


@pytest.fixture(scope="session")
def tiny_llama() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random-initialised 2-layer Llama (grouped-query attention, like real ones)."""
    torch.manual_seed(0)
    tokenizer = char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,  # the harmless judge prompt is ~4.5k characters
        eos_token_id=1,
        pad_token_id=0,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture(scope="session")
def model_dir(tiny_llama, tmp_path_factory) -> str:
    """The tiny Llama saved as a model folder, for loading by path (CLI, load_model)."""
    model, tokenizer = tiny_llama
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2 (converted to the safetensors cache on first use)."""
    from rain_search.models import load_model

    return load_model(device="cpu")


def no_e(text: str) -> float:
    """A judge for tiny-model tests: any letter e is bad."""
    return -1.0 if "e" in text else 1.0


@pytest.fixture(name="no_e")
def no_e_judge():
    return no_e


@pytest.fixture
def generator(tiny_llama):
    """A fast-preset RainGenerator on the tiny Llama, judged by :func:`no_e`."""
    from rain_search.search import RainGenerator

    model, tokenizer = tiny_llama
    return RainGenerator(model, tokenizer, "fast", evaluator=no_e, embedder="hidden")
