"""RAIN for LlamaIndex: ``Rain``, an LLM usable as ``Settings.llm`` in query and chat engines;
``RainGuard``, which judges agent tool outputs; and ``RainNodePostprocessor``, which
judges retrieved chunks before a query engine answers from them.

Install with ``pip install 'rain-search[llama-index]'``.
"""

from rain_search.extras import require

require("llama_index.core", "llama-index", "rain_integrations.llama_index")

from rain_integrations._guard import GuardViolation  # noqa: E402
from rain_integrations._options import UnknownOption  # noqa: E402
from rain_integrations.llama_index.events import RainGuardEvent  # noqa: E402
from rain_integrations.llama_index.guard import GuardedTool, RainGuard  # noqa: E402
from rain_integrations.llama_index.llm import Rain  # noqa: E402
from rain_integrations.llama_index.postprocessor import RainNodePostprocessor  # noqa: E402

__all__ = [
    "GuardViolation",
    "GuardedTool",
    "Rain",
    "RainGuard",
    "RainGuardEvent",
    "RainNodePostprocessor",
    "UnknownOption",
]
