"""RAIN for LlamaIndex: ``Rain``, an LLM usable as ``Settings.llm`` in query and chat engines.

Install with ``pip install 'rain-search[llama-index]'``.
"""

from rain_search.extras import require

require("llama_index.core", "llama-index", "rain_integrations.llama_index")

from rain_integrations.llama_index.llm import Rain  # noqa: E402

__all__ = ["Rain"]
