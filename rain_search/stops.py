"""Where an answer ends, for the search and for plain decoding alike.

Both cut the text at the same marks (EOS, a stop sequence or a new turn
marker, the length budget) and keep only the tokens behind what the user sees,
so their token counts compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rain_search.backends.base import Backend
from rain_search.result import FinishReason


class Stops:
    """Where an answer ends: EOS, a stop sequence or turn marker, or the length budget."""

    def __init__(self, backend: Backend[Any], stops: Sequence[str]) -> None:
        self.backend = backend
        self.stops = tuple(stops)

    def cut(self, text: str) -> str:
        """``text`` up to the first stop sequence."""
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=len(text))
        return text[:cut]

    def found(self, token_ids: Sequence[int]) -> bool:
        if not self.stops:
            return False
        text = self.backend.decode(token_ids)
        return any(stop in text for stop in self.stops)

    def reason(
        self, token_ids: Sequence[int], eos: frozenset[int], max_tokens: int
    ) -> FinishReason | None:
        if token_ids and token_ids[-1] in eos:
            return "eos"
        if self.found(token_ids):
            return "stop"
        if len(token_ids) >= max_tokens:
            return "length"
        return None

    def finish(
        self, token_ids: Sequence[int], eos: frozenset[int], max_tokens: int
    ) -> tuple[str, FinishReason, list[int]]:
        """Visible text, finish reason ("length" if still open) and the tokens behind the text.

        Tokens past a stop sequence are dropped (a token the stop starts in is
        kept), so token counts cover only what the user sees.
        """
        text = self.cut(self.backend.decode(token_ids))
        reason = self.reason(token_ids, eos, max_tokens) or "length"
        kept = list(token_ids)
        if reason == "stop":
            while kept and self.backend.decode(kept[:-1]).startswith(text):
                kept.pop()
        return text, reason, kept
