"""What RainLLM and ChatRain share on the LangChain side: tracing parameters."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.base import LangSmithParams

from rain_integrations._params import RainParams


class LangChainRain(RainParams):
    """RainParams plus the LangSmith parameters both LangChain models report."""

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)  # type: ignore[misc]
        params.update(
            ls_provider="rain",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_temperature=kwargs.get("temperature", self.config.temperature),
            ls_max_tokens=kwargs.get("max_new_tokens", self.config.max_new_tokens),
        )
        return params
