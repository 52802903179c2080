"""The OpenAI-compatible HTTP app: one factory, served by uvicorn or by Ray Serve.

``build_app`` takes a ready :class:`~rain_search.search.RainGenerator` or a
function that builds one (a Ray replica calls it in its own process), and
returns a FastAPI app with ``POST /v1/chat/completions``, ``POST
/v1/completions``, ``GET /v1/models`` and ``GET /health``.
"""

from __future__ import annotations

import hmac
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from rain_integrations.server.body import BodyLimit
from rain_integrations.server.calls import prepare
from rain_integrations.server.errors import APIError, error_body, install_handlers
from rain_integrations.server.generators import Generators, GeneratorSource
from rain_integrations.server.limits import GateFull, SearchGate, ServerLimits
from rain_integrations.server.memory import trim_heap
from rain_integrations.server.runner import SearchRun
from rain_integrations.server.schemas import ChatRequest, CompletionRequest
from rain_integrations.server.shapes import DONE, HEARTBEAT, Reply, sse
from rain_search.errors import Cancelled
from rain_search.result import RainResult, StepStats


@dataclass
class ServerState:
    """What one app holds: the generators, the limits, the gate and outcome counts."""

    generators: Generators
    limits: ServerLimits
    gate: SearchGate
    heartbeat: float
    outcomes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, run: SearchRun) -> None:
        """Called on a search's own thread when it ends: count it, give its memory back."""
        with self._lock:
            self.outcomes[run.outcome] += 1
        trim_heap()


def build_app(
    generator: GeneratorSource,
    *,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    heartbeat: float = 5.0,
    preload: bool = True,
) -> FastAPI:
    """The server app for ``generator`` (or a function that builds it).

    ``api_key`` makes every ``/v1`` route require ``Authorization: Bearer
    <key>``. ``model_name`` is what clients send as ``model`` (default: the
    model's folder or id). ``heartbeat`` is how often, in seconds, a quiet
    stream writes an SSE comment, which is also how soon a client that went
    away is noticed. ``preload`` builds the generator at start-up, not at the
    first request.
    """
    limits = limits or ServerLimits()
    state = ServerState(
        generators=Generators(generator, model_name),
        limits=limits,
        gate=SearchGate(limits.max_concurrent, limits.max_queue),
        heartbeat=heartbeat,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if preload:
            await run_in_threadpool(state.generators.base)
        yield

    app = FastAPI(
        title="RAIN", summary="RAIN tree-search answers, OpenAI-compatible", lifespan=lifespan
    )
    app.state.rain = state
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    install_handlers(app)
    app.include_router(open_routes(state))
    app.include_router(api_routes(state), dependencies=[Depends(bearer(api_key))])
    return app


def bearer(api_key: str | None) -> Any:
    """A dependency that refuses a request without ``Authorization: Bearer <api_key>``.

    The key is compared as bytes, in constant time: a header with characters
    outside ASCII (or any other malformed one) is a wrong key, a 401, never a
    500 from comparing strings ``hmac`` will not compare.
    """
    expected = None if api_key is None else api_key.encode("utf-8")

    async def check(request: Request) -> None:
        if expected is None:
            return
        raw = dict(request.scope["headers"]).get(b"authorization", b"")
        scheme, _, given = raw.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), expected):
            raise APIError(
                401,
                "missing or wrong API key; send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    return check


def open_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and load, without the API key (for load balancers and probes)."""
        return {
            "status": "ok" if state.generators.loaded else "loading",
            "running": state.gate.running,
            "waiting": state.gate.waiting,
            "searches": dict(state.outcomes),
        }

    return router


def api_routes(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def models() -> dict[str, Any]:
        name = await run_in_threadpool(lambda: state.generators.model_name)
        card = {"id": name, "object": "model", "created": 0, "owned_by": "rain"}
        return {"object": "list", "data": [card]}

    @router.post("/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Response:
        return await answer(state, body, request, Reply(chat=True, model=body.model))

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await answer(state, body, request, Reply(chat=False, model=body.model))

    return router


async def answer(
    state: ServerState, body: ChatRequest | CompletionRequest, request: Request, reply: Reply
) -> Response:
    """Check the request, wait for a search slot, then reply whole or as a stream.

    A stream's response starts only once its search has a slot, so a request
    that cannot get one in time is a 503 for streams and plain requests alike.
    """
    prepared = await run_in_threadpool(prepare, body, state.generators, state.limits)
    try:
        ticket = state.gate.admit()
    except GateFull as exc:
        raise APIError(429, str(exc), code="rate_limit_exceeded") from exc
    if not await ticket.wait(request.is_disconnected, state.limits.max_wait):
        if await request.is_disconnected():
            return JSONResponse(error_body(499, "the client closed the request"), status_code=499)
        raise APIError(
            503,
            f"the server is busy: no search slot came free within {state.limits.max_wait:g} s; "
            "retry later",
            code="server_busy",
        )
    try:
        stream = prepared.open()
    except BaseException:
        ticket.release()
        raise
    run = SearchRun(stream, ticket, on_end=state.record)
    timeout = None if prepared.own_budget else state.limits.timeout
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            events(run, reply, usage, state.heartbeat, timeout),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        result = await run.result(request.is_disconnected)
    except Cancelled:
        return JSONResponse(error_body(499, "the client closed the request"), status_code=499)
    except Exception as exc:
        raise APIError(500, f"the search failed: {exc}", code=type(exc).__name__) from exc
    if timeout is not None and result.finish_reason == "budget":
        raise timed_out(result, timeout)
    return JSONResponse(reply.whole(result))


def timed_out(result: RainResult, timeout: float) -> APIError:
    """The server's budget cut the answer: an error, not a truncated answer read as whole.

    A client that would rather have the answer so far sets ``rain.timeout``
    (up to the server's) or ``rain.max_forward_calls``; its answer then ends
    with ``finish_reason`` ``length`` and ``rain.finish_reason`` ``budget``.
    """
    why = result.warnings[0] if result.warnings else f"the {timeout:g} s timeout was reached"
    return APIError(
        504,
        f"the answer could not be finished within the server's limits: {why} "
        f"({result.completion_tokens} tokens committed); ask for fewer max_tokens or a "
        "lighter rain.preset, or set rain.timeout to get the answer so far",
        code="timeout",
    )


async def events(
    run: SearchRun,
    reply: Reply,
    include_usage: bool,
    heartbeat: float,
    timeout: float | None = None,
) -> AsyncIterator[str]:
    """The SSE body: role, one chunk per committed step, the closing chunk, usage, [DONE].

    An answer the server's ``timeout`` cut short ends with an ``error`` event
    instead of the closing chunk. Leaving early (the client went away, so
    writing failed or the response was cancelled) cancels the search.
    """
    try:
        opening = reply.opening()
        if opening is not None:
            yield sse(opening)
        async for event in run.events(heartbeat):
            if event is None:
                yield HEARTBEAT
            elif isinstance(event, StepStats):
                yield sse(reply.step(event))
            elif isinstance(event, RainResult) and timeout and event.finish_reason == "budget":
                yield sse(timed_out(event, timeout).body())
            elif isinstance(event, RainResult):
                yield sse(reply.closing(event))
                if include_usage:
                    yield sse(reply.usage_chunk(event))
            else:
                message = f"the search failed: {event}"
                yield sse(error_body(500, message, code=type(event).__name__))
        yield DONE
    finally:
        if not run.ended.is_set():
            run.cancel()
