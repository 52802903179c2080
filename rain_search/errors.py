"""Exceptions raised by rain_search.

Every error a user can trigger with bad input derives from :class:`RainError`
and says what was wrong and how to fix it, so callers never have to read a
stack trace from deep inside torch or transformers.
"""

from __future__ import annotations


class RainError(Exception):
    """Base class of every error rain_search raises on purpose."""


class ConfigError(RainError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class TemplateError(RainError, ValueError):
    """An evaluation template is unknown, malformed or unusable with a tokenizer."""


class ModelLoadError(RainError):
    """A model or tokenizer could not be found or loaded."""


class PromptError(RainError, ValueError):
    """A prompt is empty, of the wrong type, or too long for the model."""


class EvaluatorError(RainError):
    """An evaluator failed or returned something other than a score in [-1, 1]
    (or an embedder something other than one vector per text)."""


class Cancelled(RainError):
    """The caller cancelled the generation (a closed stream, a cancelled task)."""


class Unsupported(RainError, NotImplementedError):
    """A feature the model or the search does not have; the message says what to use instead."""


class MissingExtra(RainError, ImportError):
    """An optional part is not installed; the message names the extra that brings it."""
