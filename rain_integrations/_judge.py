"""The guard's judge as a sync/async pair, whatever form the user gave it in.

A guard is called from sync code (``invoke``) and from event loops (``ainvoke``,
async agents), and judges come in several forms: a RAIN ``Evaluator``, a plain
function, an ``async def`` function, a LangChain Runnable (anything with
``invoke`` and ``ainvoke``), or a sync function with an async twin. Each is
turned into one :class:`Judge` with both entry points, so that no form fails
under the other kind of call.

A judge's own exception reaches the caller as it was raised (a note says it
came from the guard's judge), so ``with_retry(retry_if_exception_type=...)``
and ``except`` clauses on the original type keep working.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from rain_search.errors import ConfigError, EvaluatorError
from rain_search.evaluators import Evaluator, check_score

T = TypeVar("T")
SyncScore = Callable[[str, str], object]
AsyncScore = Callable[[str, str], Awaitable[object]]


@runtime_checkable
class RunnableJudge(Protocol):
    """A LangChain Runnable (or anything alike) that scores ``{'prompt', 'text'}``."""

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any: ...

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any: ...


JudgeSpec = Evaluator | RunnableJudge | Callable[..., object]
"""What ``evaluator=`` takes: a RAIN Evaluator, a Runnable-like judge, or a (sync or async)
function of ``(text)`` or ``(prompt, text)``."""


@dataclass(frozen=True)
class Judge:
    """Scores ``text`` as an answer to ``prompt``, from sync code or an event loop."""

    name: str
    sync: SyncScore
    asynchronous: AsyncScore

    def score(self, prompt: str, text: str) -> float:
        try:
            value = self.sync(prompt, text)
        except Exception as exc:
            _note(exc, self.name)
            raise
        return check_score(value, self.name)

    async def ascore(self, prompt: str, text: str) -> float:
        try:
            value = await self.asynchronous(prompt, text)
        except Exception as exc:
            _note(exc, self.name)
            raise
        return check_score(value, self.name)


def make_judge(evaluator: object, aevaluator: object) -> Judge:
    """One :class:`Judge` from ``evaluator=`` and, optionally, its async twin ``aevaluator=``."""
    if aevaluator is not None and not inspect.iscoroutinefunction(aevaluator):
        raise ConfigError(
            f"aevaluator= takes an async function (async def), got {type(aevaluator).__name__}"
        )
    if evaluator is None:
        if aevaluator is None:
            raise ConfigError("a guard needs evaluator= or aevaluator= (or llm=)")
        return _from_async(aevaluator)
    judge = _from_one(evaluator)
    if aevaluator is None:
        return judge
    if inspect.iscoroutinefunction(evaluator):
        raise ConfigError("evaluator= is already async; pass a sync function with aevaluator=")
    twin = _from_async(aevaluator)
    return Judge(judge.name, judge.sync, twin.asynchronous)


def _from_one(evaluator: object) -> Judge:
    if isinstance(evaluator, Evaluator):
        return _from_evaluator(evaluator)
    if isinstance(evaluator, RunnableJudge):
        return _from_runnable(evaluator)
    if inspect.iscoroutinefunction(evaluator):
        return _from_async(evaluator)
    if callable(evaluator):
        return _from_function(evaluator)
    raise ConfigError(
        f"unknown evaluator {evaluator!r}; use a RAIN Evaluator, a function (text) or "
        "(prompt, text) returning a score in [-1, 1], an async function, or a Runnable "
        "taking {'prompt': ..., 'text': ...} and returning a score"
    )


def _from_evaluator(evaluator: Evaluator) -> Judge:
    def sync(prompt: str, text: str) -> object:
        return _unwrapped(lambda: evaluator.score(prompt, [text])[0])

    async def asynchronous(prompt: str, text: str) -> object:
        return await asyncio.to_thread(sync, prompt, text)

    return Judge(str(getattr(evaluator, "name", type(evaluator).__name__)), sync, asynchronous)


def _from_runnable(runnable: RunnableJudge) -> Judge:
    def sync(prompt: str, text: str) -> object:
        return runnable.invoke({"prompt": prompt, "text": text})

    async def asynchronous(prompt: str, text: str) -> object:
        return await runnable.ainvoke({"prompt": prompt, "text": text})

    name = getattr(runnable, "name", None) or type(runnable).__name__
    return Judge(f"Runnable {name}", sync, asynchronous)


def _from_function(fn: Callable[..., object]) -> Judge:
    takes_prompt = _takes_prompt(fn)

    def sync(prompt: str, text: str) -> object:
        return fn(prompt, text) if takes_prompt else fn(text)

    async def asynchronous(prompt: str, text: str) -> object:
        return await asyncio.to_thread(sync, prompt, text)

    return Judge(f"function {_name(fn)}", sync, asynchronous)


def _from_async(fn: Callable[..., Coroutine[Any, Any, object]]) -> Judge:
    takes_prompt = _takes_prompt(fn)

    async def asynchronous(prompt: str, text: str) -> object:
        return await (fn(prompt, text) if takes_prompt else fn(text))

    def sync(prompt: str, text: str) -> object:
        """From sync code, the coroutine runs on a loop of its own in a worker thread
        (the caller may itself be inside a running loop)."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, asynchronous(prompt, text)).result()

    return Judge(f"async function {_name(fn)}", sync, asynchronous)


def _unwrapped(call: Callable[[], T]) -> T:
    """``call()``, with a RAIN ``EvaluatorError`` that wraps the user's own exception
    replaced by that exception, so its type is what callers catch and retry on."""
    try:
        return call()
    except EvaluatorError as exc:
        cause = exc.__cause__
        if isinstance(cause, Exception):
            raise cause from exc
        raise


def _note(exc: Exception, name: str) -> None:
    """Say where ``exc`` came from, leaving its type (what callers catch) as it is."""
    add_note = getattr(exc, "add_note", None)  # Python 3.11+
    if add_note is not None:
        add_note(f"raised by the RAIN guard's judge ({name})")


def _takes_prompt(fn: Callable[..., object]) -> bool:
    """Two required positional parameters (or ``*args``): ``fn(prompt, text)``."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]
    starred = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    return len(required) >= 2 or (not required and starred)


def _name(fn: object) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)
