"""What RainLLM and ChatRain share on the LangChain side: streaming and tracing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models.base import LangSmithParams

from rain_integrations._params import RainParams


class LangChainRain(RainParams):
    """RainParams plus streaming and the LangSmith parameters of both LangChain models.

    Subclasses say how a committed step and the closing metadata become their
    kind of chunk (``_step_chunk``, ``_final_chunk``).
    """

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
        params = super()._get_ls_params(stop=stop, **kwargs)  # type: ignore[misc]
        params.update(
            ls_provider="rain",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_temperature=kwargs.get("temperature", self.config.temperature),
            ls_max_tokens=kwargs.get("max_new_tokens", self.config.max_new_tokens),
        )
        return params
