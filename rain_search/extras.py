"""Optional parts of the package, and the error that says how to install one.

Each optional dependency belongs to one extra of the ``rain-search``
distribution; importing it through :func:`require` turns a bare
``ModuleNotFoundError`` into a :class:`MissingExtra` that names the
``pip install`` command, so a user never has to guess which package is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from rain_search.errors import MissingExtra


def install_hint(extra: str) -> str:
    return f"install it with `pip install 'rain-search[{extra}]'`"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a :class:`MissingExtra` naming ``extra`` and what needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the module exists but something inside it is broken: show that
        raise MissingExtra(f"{purpose} needs {module!r}; {install_hint(extra)}") from exc


def check(module: str, extra: str, purpose: str) -> None:
    """Like :func:`require`, without importing (for modules another library imports)."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(f"{purpose} needs {module!r}; {install_hint(extra)}")
