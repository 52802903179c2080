"""``RainLLM``: RAIN as a LangChain ``BaseLLM``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from rain_integrations._params import search_metadata, token_usage
from rain_integrations.langchain._common import LangChainRain
from rain_search.result import StepStats


class RainLLM(LangChainRain, BaseLLM):
    """A Hugging Face model that answers through the RAIN tree search.

    >>> llm = RainLLM(preset="fast", max_new_tokens=48)   # doctest: +SKIP
    >>> chain = prompt | llm | StrOutputParser()          # doctest: +SKIP

    Streaming yields each committed token set as soon as the search commits
    it; ``generation_info`` carries the finish reason and search statistics.
    """

    @property
    def _llm_type(self) -> str:
        return "rain"

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """All prompts' searches start at once, so the engine runs them side by side and
        they share its forward calls (as ``RainGenerator.generate_batch`` does); the
        answers are read in order."""
        streams = [self.open_stream(prompt, stop, kwargs).start() for prompt in prompts]
        try:
            generations = [[_merge(list(self._chunks(s, run_manager)))] for s in streams]
        finally:
            for stream in streams:
                stream.close()  # a failed answer stops the others' searches too
        return LLMResult(generations=generations, llm_output=self._llm_output(generations))

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        streams = [self.open_stream(prompt, stop, kwargs).start() for prompt in prompts]
        generations = []
        try:
            for stream in streams:
                chunks = [chunk async for chunk in self._achunks(stream, run_manager)]
                generations.append([_merge(chunks)])
        finally:
            for stream in streams:
                stream.close()
        return LLMResult(generations=generations, llm_output=self._llm_output(generations))

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        yield from self._chunks(self.open_stream(prompt, stop, kwargs), run_manager)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for chunk in self._achunks(self.open_stream(prompt, stop, kwargs), run_manager):
            yield chunk

    def _step_chunk(self, step: StepStats) -> GenerationChunk:
        """A committed token set; its statistics arrive with the final chunk, so that
        LangChain can merge chunks (it cannot merge per-chunk float values)."""
        return GenerationChunk(text=step.text)

    def _final_chunk(self, result: Any) -> GenerationChunk:
        """An empty chunk closing the stream with the whole answer's metadata."""
        info = {**search_metadata(result), "token_usage": token_usage(result)}
        return GenerationChunk(text="", generation_info=info)

    def _llm_output(self, generations: list[list[Generation]]) -> dict[str, Any]:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for (generation,) in generations:
            for key, value in (generation.generation_info or {}).get("token_usage", {}).items():
                usage[key] += value
        return {"token_usage": usage, "model_name": self.model_name}


def _merge(chunks: list[GenerationChunk]) -> Generation:
    """The whole answer: the steps' text, and the final chunk's metadata."""
    return Generation(
        text="".join(c.text for c in chunks), generation_info=chunks[-1].generation_info
    )
