"""rain_search: RAIN (Rewindable Auto-regressive INference) on Hugging Face models.

The public surface: :class:`RainGenerator` (prompt -> :class:`RainResult`),
:class:`RainConfig` (every knob, with the paper's defaults and presets),
evaluation templates and evaluators, and :func:`load_model` for the embedded
SmolLM2 or any causal LM. Heavy modules load on first use, so importing the
package (for example from a LangChain adapter) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rain_search.config import PRESETS, RainConfig
from rain_search.errors import (
    Cancelled,
    ConfigError,
    EvaluatorError,
    ModelLoadError,
    PromptError,
    RainError,
    TemplateError,
)

__version__ = "0.2.0"

_LAZY = {
    "rain_generate": "rain_search.decoding",
    "CUSTOM_GENERATE_DIR": "rain_search.decoding",
    "RainGenerator": "rain_search.search",
    "RainStream": "rain_search.stream",
    "TreeSearch": "rain_search.policy",
    "Candidate": "rain_search.result",
    "RainResult": "rain_search.result",
    "StepStats": "rain_search.result",
    "EvalTemplate": "rain_search.templates",
    "load_template": "rain_search.templates",
    "Evaluator": "rain_search.evaluators",
    "SelfEvaluator": "rain_search.evaluators",
    "ModelEvaluator": "rain_search.evaluators",
    "FunctionEvaluator": "rain_search.evaluators",
    "MiniLMEmbedder": "rain_search.embeddings",
    "HiddenStateEmbedder": "rain_search.embeddings",
    "load_model": "rain_search.models",
    "format_prompt": "rain_search.models",
}

__all__ = [
    "PRESETS",
    "Cancelled",
    "ConfigError",
    "EvaluatorError",
    "ModelLoadError",
    "PromptError",
    "RainConfig",
    "RainError",
    "TemplateError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rain_search' has no attribute {name!r}")
