"""What RainLLM and ChatRain share on the LangChain side: streaming and tracing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models.base import LangSmithParams
from pydantic import Field

from rain_integrations._identity import check_cacheable, identifying_params
from rain_integrations._params import RainParams, unalias
from rain_integrations.langchain.configurable import configurable, is_setting


class LangChainRain(RainParams):
    """RainParams plus streaming and the LangSmith parameters of both LangChain models.

    Subclasses say how a committed step and the closing metadata become their
    kind of chunk (``_step_chunk``, ``_final_chunk``).
    """

    streaming: bool = Field(
        default=False,
        description="LangChain's streaming flag. RAIN always decodes step by step and tells "
        "callbacks each committed set, so invoke behaves the same either way.",
    )

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """The answer cache's key: model, judge, embedder, system message, every setting.

        With a cache in use, a judge that has no stable name is an error here
        rather than a key that another judge could share.
        """
        if self._cache_in_use():
            check_cacheable(self)
        return identifying_params(self)

    def _cache_in_use(self) -> bool:
        cache = self.cache  # type: ignore[attr-defined]
        return isinstance(cache, BaseCache) or (cache is not False and get_llm_cache() is not None)

    def configurable_fields(self, **kwargs: Any) -> Any:
        """Search settings (``max_new_tokens``, ``seed``, ``preset``, any RainConfig field,
        ``system``) are configurable per run as well as the pydantic fields."""
        if not any(is_setting(name) for name in kwargs):
            return super().configurable_fields(**kwargs)  # type: ignore[misc]
        return configurable(self, kwargs)

    def _step_chunk(self, step: Any) -> Any:
        raise NotImplementedError

    def _final_chunk(self, result: Any) -> Any:
        raise NotImplementedError

    def _chunks(self, stream: Any, run_manager: Any) -> Iterator[Any]:
        """Each committed step as a chunk (told to the callbacks), then the closing chunk."""
        try:
            for step in stream:
                chunk = self._step_chunk(step)
                if run_manager is not None:
                    run_manager.on_llm_new_token(step.text, chunk=chunk)
                yield chunk
        finally:
            stream.close()  # an abandoned stream stops the search now
        yield self._final_chunk(stream.result)

    async def _achunks(self, stream: Any, run_manager: Any) -> AsyncIterator[Any]:
        async for step in stream:
            chunk = self._step_chunk(step)
            if run_manager is not None:
                await run_manager.on_llm_new_token(step.text, chunk=chunk)
            yield chunk
        yield self._final_chunk(stream.result)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params: LangSmithParams = super()._get_ls_params(stop=stop, **kwargs)  # type: ignore[misc]
        call = unalias(kwargs)  # per-call values under either name win over the constructor's
        params["ls_provider"] = "rain"
        params["ls_model_name"] = call.get("model", self.model_name)
        params["ls_temperature"] = call.get("temperature", self.config.temperature)
        params["ls_max_tokens"] = call.get("max_new_tokens", self.config.max_new_tokens)
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """The model's own tokens (LangChain's default needs a GPT-2 download)."""
        if self.custom_get_token_ids is not None:  # type: ignore[attr-defined]
            return list(self.custom_get_token_ids(text))  # type: ignore[attr-defined]
        return self.token_ids(text)
