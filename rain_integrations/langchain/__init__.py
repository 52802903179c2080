"""RAIN for LangChain: ``RainLLM`` (text in, text out), ``ChatRain`` (messages) and
``RainGuard`` (a Runnable that checks text, e.g. tool outputs, and acts on bad ones).

Install with ``pip install 'rain[langchain]'``.
"""

from rain_integrations.langchain.chat import ChatRain
from rain_integrations.langchain.guard import RainGuard
from rain_integrations.langchain.llm import RainLLM

__all__ = ["ChatRain", "RainGuard", "RainLLM"]
