"""Refusing options a constructor does not have, by name, with the valid ones listed.

A guard that kept a misspelt ``treshold=0.5`` and judged at its default would
pass text the user meant to stop, so every guard checks its keywords before
anything else and names the ones it takes (and the likely intended one).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from rain_search.errors import ConfigError

HINTS = {
    "strategy": "policy",
    "on_violation": "policy",
    "action": "policy",
    "judge": "evaluator",
    "async_evaluator": "aevaluator",
    "min_score": "threshold",
    "message": "replacement",
}
"""Names other guard libraries use for our options (LangChain's ``strategy=`` is ``policy=``)."""


class UnknownOption(ConfigError, TypeError):
    """An option the constructor does not take: a ``TypeError`` as Python raises for an
    unexpected keyword, and a :class:`ConfigError` like every other bad setting."""


def refuse_unknown(owner: str, given: Iterable[str], valid: Collection[str]) -> None:
    """Raise :class:`UnknownOption` if any of ``given`` is not in ``valid``."""
    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    meant = {name: suggestion(name, valid) for name in unknown}
    guesses = [f"{guess!r} for {name!r}" for name, guess in meant.items() if guess]
    hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    raise UnknownOption(
        f"{owner} got unknown option(s) {unknown}{hint}; valid options: {', '.join(sorted(valid))}"
    )


def suggestion(name: str, valid: Collection[str]) -> str | None:
    """The valid option ``name`` most likely meant, or None."""
    if HINTS.get(name) in valid:
        return HINTS[name]
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.75)
    return close[0] if close else None
