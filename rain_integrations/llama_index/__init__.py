"""RAIN for LlamaIndex: ``Rain``, an LLM usable as ``Settings.llm`` in query and chat engines.

Install with ``pip install 'rain[llama-index]'``.
"""

from rain_integrations.llama_index.llm import Rain

__all__ = ["Rain"]
