"""The OpenAI-compatible HTTP app: one factory, served by uvicorn or by Ray Serve.

``build_app`` takes a ready :class:`~rain_search.search.RainGenerator` or a
function that builds one (a Ray replica calls it in its own process), and
returns a FastAPI app with ``POST /v1/chat/completions``, ``POST
/v1/completions``, ``GET /v1/models``, ``GET /metrics`` (Prometheus) and
``GET /health``. With an API key, every route but ``/health`` needs it, the
OpenAPI schema included; the interactive ``/docs`` pages are then off (a
browser cannot send the key).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from rain_integrations.server.auth import KEY_MESSAGE, key_matches
from rain_integrations.server.body import BodyLimit
from rain_integrations.server.calls import prepare
from rain_integrations.server.errors import APIError, error_body, install_handlers
from rain_integrations.server.generators import Generators, GeneratorSource
from rain_integrations.server.limits import GateFull, SearchGate, ServerLimits, Ticket
from rain_integrations.server.memory import trim_heap
from rain_integrations.server.metrics import CONTENT_TYPE, MetricsMiddleware, ServerMetrics
from rain_integrations.server.runner import OutOfTime, SearchRun
from rain_integrations.server.schemas import ChatRequest, CompletionRequest
from rain_integrations.server.shapes import DONE, HEARTBEAT, Reply, sse
from rain_search.errors import Cancelled
from rain_search.result import RainResult, StepStats


@dataclass
class ServerState:
    """What one app holds: the generators, the limits, the gate, metrics and outcome counts."""

    generators: Generators
    limits: ServerLimits
    gate: SearchGate
    heartbeat: float
    metrics: ServerMetrics
    outcomes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, run: SearchRun, server_budget: bool) -> None:
        """Called on a search's own thread when it ends: count it, give its memory back.

        An answer the server's timeout cut (a 504 to its client) counts as
        ``timed_out``, not ``completed``.
        """
        cut = run.final is not None and run.final.finish_reason == "budget" and server_budget
        outcome = "timed_out" if run.out_of_time or cut else run.outcome
        with self._lock:
            self.outcomes[outcome] += 1
        if run.final is not None:
            self.metrics.searched(run.final)
        trim_heap()


def build_app(
    generator: GeneratorSource,
    *,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    heartbeat: float = 5.0,
    preload: bool = True,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """The server app for ``generator`` (or a function that builds it).

    ``api_key`` makes every route but ``/health`` (the ``/v1`` routes,
    ``/metrics``, ``/openapi.json``) require ``Authorization: Bearer <key>``.
    ``model_name`` is what clients send as ``model`` (default: the model's
    folder or id). ``heartbeat`` is how often, in seconds, a quiet
    stream writes an SSE comment, which is also how soon a client that went
    away is noticed. ``preload`` builds the generator at start-up, not at the
    first request. ``metrics`` records what ``GET /metrics`` shows (a
    Ray replica passes one that also records to Ray's metrics).
    """
    limits = limits or ServerLimits()
    metrics = metrics or ServerMetrics()
    state = ServerState(
        generators=Generators(generator, model_name),
        limits=limits,
        gate=SearchGate(limits.max_concurrent, limits.max_queue, on_change=metrics.load),
        heartbeat=heartbeat,
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if preload:
            await run_in_threadpool(state.generators.base)
        yield

    app = FastAPI(
        title="RAIN",
        summary="RAIN tree-search answers, OpenAI-compatible",
        lifespan=lifespan,
        **documentation(api_key),
    )
    app.state.rain = state
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every refusal
    install_handlers(app)
    key = [Depends(bearer(api_key))]
    app.include_router(open_routes(state))
    app.include_router(api_routes(state), dependencies=key)
    app.include_router(metrics_routes(state), dependencies=key)
    if api_key is not None:
        app.include_router(schema_route(app), dependencies=key)
    return app


def documentation(api_key: str | None) -> dict[str, Any]:
    """FastAPI's documentation routes: open without a key; with one, the schema goes behind it
    (:func:`schema_route`) and the browser pages are off."""
    if api_key is None:
        return {}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}


def schema_route(app: FastAPI) -> APIRouter:
    router = APIRouter()

    @router.get("/openapi.json", include_in_schema=False)
    async def schema() -> dict[str, Any]:
        """The OpenAPI schema, for clients that send the key."""
        return app.openapi()

    return router


def metrics_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics (text format), with the API key when the server has one."""
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)

    return router


def bearer(api_key: str | None) -> Any:
    """A dependency that refuses a request without ``Authorization: Bearer <api_key>`` (401)."""
    expected = None if api_key is None else api_key.encode("utf-8")

    async def check(request: Request) -> None:
        if not key_matches(request.scope["headers"], expected):
            raise APIError(401, KEY_MESSAGE, code="invalid_api_key")

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
    stream = prepared.stream
    try:
        ticket = await take_slot(state, request)
    except BaseException:
        stream.close()
        raise
    if ticket is None:
        stream.close()
        return JSONResponse(error_body(499, "the client closed the request"), status_code=499)
    timeout = None if prepared.own_budget else state.limits.timeout
    arrival = request.scope.get("state", {}).get("rain_arrival", time.perf_counter())
    run = SearchRun(
        stream,
        ticket,
        deadline=None if timeout is None else time.monotonic() + timeout,
        on_first_step=lambda: state.metrics.first_token(time.perf_counter() - arrival),
        on_end=lambda run: state.record(run, server_budget=timeout is not None),
    )
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            events(run, reply, usage, state.heartbeat, timeout, state.metrics),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await whole(state, run, reply, request, timeout)


async def take_slot(state: ServerState, request: Request) -> Ticket | None:
    """A search slot (429 when the queue is full, 503 when none came free in time);
    None when the client left while waiting."""
    try:
        ticket = state.gate.admit()
    except GateFull as exc:
        raise APIError(429, str(exc), code="rate_limit_exceeded") from exc
    queued = time.perf_counter()
    if await ticket.wait(request.is_disconnected, state.limits.max_wait):
        state.metrics.queued(time.perf_counter() - queued)
        return ticket
    if await request.is_disconnected():
        return None
    raise APIError(
        503,
        f"the server is busy: no search slot came free within {state.limits.max_wait:g} s; "
        "retry later",
        code="server_busy",
    )


async def whole(
    state: ServerState, run: SearchRun, reply: Reply, request: Request, timeout: float | None
) -> Response:
    """A plain request's answer once its search ends (504 when the server's timeout cut it)."""
    try:
        result = await run.result(request.is_disconnected)
    except OutOfTime:
        raise out_of_time(run, timeout) from None
    except Cancelled:
        return JSONResponse(error_body(499, "the client closed the request"), status_code=499)
    except Exception as exc:
        raise APIError(500, f"the search failed: {exc}", code=type(exc).__name__) from exc
    if timeout is not None and result.finish_reason == "budget":
        raise timed_out(result, timeout)
    answer = reply.whole(result)
    state.metrics.succeeded(str(answer["choices"][0]["finish_reason"]))
    return JSONResponse(answer)


def out_of_time(run: SearchRun, timeout: float | None) -> APIError:
    """The server's timeout passed while a step was still being searched: 504 at once."""
    return APIError(
        504,
        f"the answer could not be finished within the server's {timeout:g} s timeout "
        f"({run.committed_tokens} tokens committed); ask for fewer max_tokens or a lighter "
        "rain.preset, or set rain.timeout to get the answer so far",
        code="timeout",
    )


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
    metrics: ServerMetrics | None = None,
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
        try:
            async for event in run.events(heartbeat):
                for chunk in event_chunks(event, reply, include_usage, timeout, metrics):
                    yield chunk
        except OutOfTime:
            yield sse(out_of_time(run, timeout).body())
        yield DONE
    finally:
        if not run.ended.is_set():
            run.cancel()


def event_chunks(
    event: object,
    reply: Reply,
    include_usage: bool,
    timeout: float | None,
    metrics: ServerMetrics | None,
) -> list[str]:
    """The SSE chunks one search event becomes (a heartbeat is ``None``)."""
    if event is None:
        return [HEARTBEAT]
    if isinstance(event, StepStats):
        return [sse(reply.step(event))]
    if isinstance(event, RainResult) and timeout and event.finish_reason == "budget":
        return [sse(timed_out(event, timeout).body())]
    if isinstance(event, RainResult):
        closing = reply.closing(event)
        if metrics is not None:
            metrics.succeeded(str(closing["choices"][0]["finish_reason"]))
        usage = [sse(reply.usage_chunk(event))] if include_usage else []
        return [sse(closing), *usage]
    message = f"the search failed: {event}"
    return [sse(error_body(500, message, code=type(event).__name__))]
