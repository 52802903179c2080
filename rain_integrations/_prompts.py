"""Starting a generation from an adapter with the prompt tokenised safely.

``RainGenerator.stream`` tokenises the rendered prompt as one text, which turns
special-token text inside a message into real special tokens. The adapters and
the server go through :func:`open_stream`, which tokenises with
:func:`~rain_search.models.encode_prompt` (message contents stay text) and
hands the ids to ``RainGenerator.stream_ids``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rain_search.config import RainConfig
from rain_search.models import encode_prompt
from rain_search.search import RainGenerator, RainStream, last_user_message

Prompt = str | Sequence[Mapping[str, str]]


def prompt_ids(generator: RainGenerator, prompt: Prompt, system: str | None) -> list[int]:
    """The formatted prompt's token ids; no message content becomes a special token."""
    return encode_prompt(generator.tokenizer, prompt, system)


def judge_prompt(prompt: Prompt) -> str:
    """The question the judge reads: the prompt itself, or the last user message."""
    return prompt if isinstance(prompt, str) else last_user_message(prompt)


def open_stream(
    generator: RainGenerator,
    prompt: Prompt,
    *,
    system: str | None = None,
    config: RainConfig | None = None,
) -> RainStream:
    """``generator.stream(prompt, system=..., config=...)`` with safe tokenisation."""
    ids = prompt_ids(generator, prompt, system)
    return generator.stream_ids(ids, judge_prompt(prompt), config=config)
