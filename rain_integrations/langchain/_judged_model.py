"""``JudgedChatModel``: an agent's chat model whose answer is judged before anyone sees it.

Judging an answer needs the whole answer, yet every stream a client can
subscribe to (LangGraph's ``messages`` mode, ``astream_events`` v2's
``on_chat_model_stream``/``on_chat_model_end``, LangGraph's v3 event stream)
is fed from the model run's callbacks as the tokens come. So the agent's
model runs with no callbacks of its own, and this model reports the run
itself, with the judged message as its only output: text the guard withholds
reaches no callback, hence no stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict

from rain_integrations._guard import GuardSettings
from rain_integrations.langchain.guarded_tool import silent
from rain_integrations.langchain.tool_results import with_verdict

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.tools import BaseTool

SUBJECT = "the model's answer"


class JudgedChatModel(BaseChatModel):
    """``model`` (``bound`` once tools are bound), its answers passed through ``guard``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel
    bound: Runnable[Any, Any] | None = None
    guard: GuardSettings
    question: str | None = None

    @property
    def _llm_type(self) -> str:
        return f"rain-guarded-{self.model._llm_type}"

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[Any, AIMessage]:
        """The agent binds its tools here; the judged model keeps the bound one inside."""
        return self.model_copy(update={"bound": self.model.bind_tools(tools, **kwargs)})

    def _inner(self) -> Runnable[Any, Any]:
        return self.bound if self.bound is not None else self.model

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = kwargs if stop is None else {**kwargs, "stop": stop}
        message = self._inner().invoke(messages, silent({}), **options)
        if not _has_text(message):
            return _result(message)
        return _result(
            with_verdict(message, *self.guard.check(message.text, self.question, SUBJECT))
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = kwargs if stop is None else {**kwargs, "stop": stop}
        message = await self._inner().ainvoke(messages, silent({}), **options)
        if not _has_text(message):
            return _result(message)
        checked = await self.guard.acheck(message.text, self.question, SUBJECT)
        return _result(with_verdict(message, *checked))


def _has_text(message: object) -> bool:
    return isinstance(message, AIMessage) and bool(message.text.strip())


def _result(message: BaseMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])
