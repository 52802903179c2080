"""LangChain's standard chat model suites (langchain-tests) run against ChatRain.

Unit tests construct the model only (it loads lazily); integration tests run
it on the embedded SmolLM2 with a short, cheap search. Tool calling,
structured output and multimodal inputs are not features of this model, so
those standard tests skip themselves.
"""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from rain_integrations.langchain import ChatRain


def fluent(text: str) -> float:
    """A cheap judge for the suites: prefer answers without repeated words."""
    words = text.lower().split()
    return 1.0 if len(words) == len(set(words)) else -1.0


PARAMS = {"preset": "fast", "evaluator": fluent, "embedder": "hidden"}


class Standard:
    @property
    def chat_model_class(self) -> type[ChatRain]:
        return ChatRain

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return PARAMS

    @property
    def has_tool_calling(self) -> bool:
        return False  # bind_tools exists only to say so (and where to go instead)

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        params = dict(super().standard_chat_model_params)
        # A local model has no transient network failures to retry and no API key;
        # ChatRain has no such options, and an unknown constructor keyword raises
        # (the unit suite adds api_key) rather than being silently ignored.
        params.pop("max_retries", None)
        params.pop("api_key", None)
        return {**params, "max_tokens": 3}  # short answers keep the suite quick


class TestChatRainUnit(Standard, ChatModelUnitTests):
    pass


class TestChatRainIntegration(Standard, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Some of these tests build their own model from these params alone (test_stop_sequence).
        return {**PARAMS, "max_tokens": 3}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        params = dict(super().standard_chat_model_params)
        params.pop("max_tokens")  # set in chat_model_params
        return params
