"""RAIN for LangChain: ``RainLLM`` (text in, text out), ``ChatRain`` (messages),
``RainGuard`` (a Runnable that checks text, e.g. tool outputs, and acts on bad ones)
and ``RainGuardMiddleware`` (the guard inside ``langchain.agents.create_agent``).

Install with ``pip install 'rain-search[langchain]'``; the middleware needs
``pip install 'rain-search[agents]'`` (LangChain v1's ``langchain`` package).
"""

from typing import Any

from rain_search.extras import require

require("langchain_core", "langchain", "rain_integrations.langchain")

from rain_integrations._guard import GuardViolation  # noqa: E402
from rain_integrations._options import UnknownOption  # noqa: E402
from rain_integrations.langchain.chat import ChatRain  # noqa: E402
from rain_integrations.langchain.guard import RainGuard  # noqa: E402
from rain_integrations.langchain.llm import RainLLM  # noqa: E402

__all__ = [
    "ChatRain",
    "GuardViolation",
    "RainGuard",
    "RainGuardMiddleware",
    "RainLLM",
    "UnknownOption",
]


def __getattr__(name: str) -> Any:
    """``RainGuardMiddleware`` loads ``langchain.agents`` (the 'agents' extra) on first use."""
    if name == "RainGuardMiddleware":
        from rain_integrations.langchain.middleware import RainGuardMiddleware

        return RainGuardMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
