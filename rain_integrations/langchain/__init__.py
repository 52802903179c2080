"""RAIN for LangChain: ``RainLLM`` (text in, text out), ``ChatRain`` (messages) and
``RainGuard`` (a Runnable that checks text, e.g. tool outputs, and acts on bad ones).

Install with ``pip install 'rain-search[langchain]'``.
"""

from rain_search.extras import require

require("langchain_core", "langchain", "rain_integrations.langchain")

from rain_integrations.langchain.chat import ChatRain  # noqa: E402
from rain_integrations.langchain.guard import RainGuard  # noqa: E402
from rain_integrations.langchain.llm import RainLLM  # noqa: E402

__all__ = ["ChatRain", "RainGuard", "RainLLM"]
