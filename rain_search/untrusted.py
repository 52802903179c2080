"""Tokenising text whose parts come from users, documents, tools or the model itself.

A tokenizer turns any occurrence of a special token's text (``<|im_start|>``,
``</s>``, ...) into that special token. Applied to a whole rendered prompt, that
lets a user message, a retrieved document or a tool output forge a system turn.
Here a text is a list of :class:`Segment` s, each marked trusted (a chat template's
or an evaluation template's own markup) or not (a message's content, a response).
Special-token text inside an untrusted segment is tokenised as plain text;
special tokens in trusted segments stay special.

When no special-token text falls inside an untrusted segment, the ids are
exactly the tokenizer's own for the whole text, so ordinary prompts are
unaffected.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rain_search.errors import PromptError

if TYPE_CHECKING:  # only a type here: the `rain` command's parser stays free of transformers
    from transformers import PreTrainedTokenizerBase

_patterns: weakref.WeakKeyDictionary[
    PreTrainedTokenizerBase, tuple[int, re.Pattern[str] | None]
] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Segment:
    """A piece of a prompt and whether it may contain special tokens (template markup)."""

    text: str
    trusted: bool


def check_text(text: str, what: str) -> str:
    """``text`` if it is valid Unicode that UTF-8 can encode; a :class:`PromptError` otherwise.

    A lone surrogate (``"\\ud800"``, e.g. from a JSON ``\\ud800`` escape) otherwise
    ends in a ``TypeError`` deep inside the tokenizer.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        code = ", ".join(f"U+{ord(c):04X}" for c in bad)
        raise PromptError(
            f"{what} contains a lone surrogate ({code}) at character {exc.start}, which is not "
            "valid Unicode text; send well-formed UTF-8 (pair the surrogates or remove them)"
        ) from None
    return text


def joined(segments: Sequence[Segment]) -> str:
    """The whole text of ``segments``."""
    return "".join(segment.text for segment in segments)


def encode_segments(
    tokenizer: PreTrainedTokenizerBase,
    segments: Sequence[Segment],
    *,
    add_special_tokens: bool,
) -> list[int]:
    """Token ids of the joined text; no special token comes from an untrusted segment."""
    for segment in segments:
        check_text(segment.text, "the prompt")
    text = joined(segments)
    trusted = trusted_specials(tokenizer, segments)
    if len(trusted) == len(_special_spans(tokenizer, text)):
        return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
    return encode_split(tokenizer, text, trusted, add_special_tokens=add_special_tokens)


def encode_split(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    specials: Sequence[tuple[int, int]],
    *,
    add_special_tokens: bool,
) -> list[int]:
    """``text`` tokenised with special tokens only at the ``specials`` character spans.

    This is what the tokenizer itself does, with every special token in the
    text: cut the text at them and tokenise the runs between them. The runs
    are tokenised with special-token parsing off. For byte-level BPE
    tokenizers (GPT-2, Llama 3, SmolLM2, Qwen) the result equals the ordinary
    tokenisation when ``specials`` are all the special tokens in the text.
    """
    ids: list[int] = []
    start = 0
    for begin, end in [*specials, (len(text), len(text))]:
        if begin > start:
            run = text[start:begin]
            ids += tokenizer.encode(run, add_special_tokens=False, split_special_tokens=True)
        if end > begin:
            special = tokenizer.convert_tokens_to_ids(text[begin:end])
            assert isinstance(special, int)  # one token in, one id out
            ids.append(special)
        start = end
    if not add_special_tokens:
        return ids
    before, after = _added_around(tokenizer)
    return before + ids + after


def trusted_specials(
    tokenizer: PreTrainedTokenizerBase, segments: Sequence[Segment]
) -> list[tuple[int, int]]:
    """Character spans of the special tokens that lie wholly inside trusted segments."""
    bounds, offset = [], 0
    for segment in segments:
        bounds.append((offset, offset + len(segment.text), segment.trusted))
        offset += len(segment.text)
    return [
        (begin, end)
        for begin, end in _special_spans(tokenizer, joined(segments))
        if any(trusted and lo <= begin and end <= hi for lo, hi, trusted in bounds)
    ]


def _special_spans(tokenizer: PreTrainedTokenizerBase, text: str) -> list[tuple[int, int]]:
    """Where the tokenizer would find special tokens in ``text`` (leftmost, longest first)."""
    pattern = _special_pattern(tokenizer)
    return [] if pattern is None else [m.span() for m in pattern.finditer(text)]


def _special_pattern(tokenizer: PreTrainedTokenizerBase) -> re.Pattern[str] | None:
    """A regex of every special added token's text.

    Kept per tokenizer (the judge asks for it at every judgment) and rebuilt
    when the tokenizer's vocabulary grows.
    """
    size = len(tokenizer)
    cached = _patterns.get(tokenizer)
    if cached is not None and cached[0] == size:
        return cached[1]
    specials = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    specials.discard("")
    pattern = (
        re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
        if specials
        else None
    )
    _patterns[tokenizer] = (size, pattern)
    return pattern


def _added_around(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids ``add_special_tokens=True`` puts before and after a text (e.g. BOS)."""
    bare = list(tokenizer.encode("a", add_special_tokens=False))
    full = list(tokenizer.encode("a", add_special_tokens=True))
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def to_messages(
    prompt: str | Sequence[Mapping[str, str]], system: str | None
) -> list[dict[str, str]]:
    """Validated chat messages for ``prompt``, with ``system`` first if given."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        messages = [dict(m) for m in prompt if isinstance(m, Mapping)]
    else:
        raise PromptError(
            f"a prompt must be a string or a list of {{'role', 'content'}} messages, "
            f"got {type(prompt).__name__}"
        )
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    for i, message in enumerate(messages):
        if set(message) != {"role", "content"} or not isinstance(message["content"], str):
            raise PromptError(f"message {i} must have exactly 'role' and string 'content' keys")
        if message["role"] not in ("system", "user", "assistant"):
            raise PromptError(
                f"message {i} has role {message['role']!r}; use system, user or assistant"
            )
        check_text(message["content"], f"message {i}")
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise PromptError("the prompt is empty; give a non-empty user message")
    return messages
