"""An HTTP request carried to a model replica and back, so a dead replica is an OpenAI error.

With Ray Serve, the process that holds a model can die mid-request (killed,
out of memory). Ray's HTTP proxy would then answer a plain-text ``Internal
Server Error`` or cut a stream without a word. So the HTTP side is a light
front app (:func:`front_app`) that holds no model: it reads the request,
hands it to a replica as plain data, and relays what comes back. The replica
runs the ordinary app in process (:func:`run_asgi`) and yields its ASGI
messages.

When the replica fails:

- before anything reached the client (a plain request's answer is relayed
  only once it is whole, a stream's only once it starts), the request is
  tried again on another replica, up to ``attempts`` times, then answered
  with a 503 in OpenAI's error shape;
- after a stream has started, the stream ends with an SSE ``error`` event
  and ``data: [DONE]``, so the client raises instead of taking a cut stream
  for a whole answer.

The front counts every request it relays, by route and status, and every
refusal (its own and the replicas') in its own metrics, which it serves itself
at ``GET /metrics`` (with the API key, when there is one); what only a replica
knows (its searches, tokens, queue) each replica records through Ray's metrics.

Nothing here imports Ray: the replica call is any function from a request to
an async iterator of messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from rain_integrations.server.auth import KEY_MESSAGE, key_matches
from rain_integrations.server.body import BodyLimit
from rain_integrations.server.errors import error_body
from rain_integrations.server.metrics import (
    CONTENT_TYPE,
    FRONT,
    MetricsMiddleware,
    ServerMetrics,
)
from rain_integrations.server.shapes import DONE

Request = dict[str, Any]
"""method, path, query_string, headers (byte pairs) and the whole body."""
Message = dict[str, Any]
"""``{"start": status, "headers": [...]}`` or ``{"body": bytes}``."""
ReplicaCall = Callable[[Request], AsyncIterator[Message]]


async def run_asgi(app: Any, request: Request) -> AsyncIterator[Message]:
    """Run ``request`` through the ASGI ``app`` in this process, yielding what it sends.

    When the caller stops reading (the client went away, so Ray cancelled the
    call), the app is told the client disconnected, which cancels its search.
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": request["path"],
        "raw_path": request["path"].encode(),
        "query_string": request["query_string"],
        "root_path": "",
        "headers": [(bytes(k), bytes(v)) for k, v in request["headers"]],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    out: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    pending = [{"type": "http.request", "body": request["body"], "more_body": False}]

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await out.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await out.put(None)

    task = asyncio.create_task(run())
    try:
        while (message := await out.get()) is not None:
            if message["type"] == "http.response.start":
                yield {"start": message["status"], "headers": list(message.get("headers", []))}
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield {"body": bytes(message["body"])}
                if not message.get("more_body", False):
                    break
        await task
    finally:
        gone.set()


def front_app(
    call: ReplicaCall,
    *,
    max_bytes: int,
    body_timeout: float,
    attempts: int = 2,
    metrics: ServerMetrics | None = None,
    api_key: str | None = None,
) -> Any:
    """The ASGI app that relays each request to a replica through ``call`` (see the module)."""
    metrics = metrics or ServerMetrics(only=FRONT)
    expected = None if api_key is None else api_key.encode("utf-8")

    async def relay(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] == "GET":
            await serve_metrics(metrics, key_matches(scope.get("headers", []), expected), send)
            return
        body = await read_body(receive)
        request: Request = {
            "method": scope["method"],
            "path": scope["path"],
            "query_string": scope.get("query_string", b""),
            "headers": [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])],
            "body": body,
        }
        failure: BaseException | None = None
        for _ in range(attempts):
            try:
                stream = aiter(call(request))
                first = await anext(stream)
                if is_event_stream(first):
                    await relay_stream(first, stream, send)
                    return
                whole = [first] + [message async for message in stream]
            except StopAsyncIteration as exc:  # the replica sent nothing at all
                failure = exc
                continue
            except Exception as exc:  # the replica died or could not be reached
                failure = exc
                continue
            await send_whole(whole, send)
            return
        await send_json(send, 503, replica_failed(failure))

    limited = BodyLimit(relay, max_bytes=max_bytes, timeout=body_timeout)
    return MetricsMiddleware(limited, metrics)


async def serve_metrics(metrics: ServerMetrics, authorized: bool, send: Any) -> None:
    """The front's own metrics (every relayed request and refusal), or a 401 without the key."""
    if not authorized:
        await send_json(send, 401, error_body(401, KEY_MESSAGE, code="invalid_api_key"))
        return
    headers = [(b"content-type", CONTENT_TYPE.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": metrics.exposition(), "more_body": False})


async def relay_stream(first: Message, stream: AsyncIterator[Message], send: Any) -> None:
    """Relay a started SSE stream; a replica failure ends it with an ``error`` event."""
    await send(
        {"type": "http.response.start", "status": first["start"], "headers": first["headers"]}
    )
    try:
        async for message in stream:
            await send({"type": "http.response.body", "body": message["body"], "more_body": True})
    except Exception as exc:  # the replica died mid-stream: say so, in the stream
        event = f"data: {json.dumps(replica_failed(exc))}\n\n{DONE}"
        await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def replica_failed(exc: BaseException | None) -> dict[str, Any]:
    why = f"{type(exc).__name__}" if exc is not None else "no answer"
    return error_body(
        503,
        f"the model replica serving this request failed ({why}); retry the request",
        code="replica_failed",
    )


def is_event_stream(first: Message) -> bool:
    headers = {bytes(k).lower(): bytes(v) for k, v in first.get("headers", [])}
    return headers.get(b"content-type", b"").startswith(b"text/event-stream")


async def send_whole(messages: list[Message], send: Any) -> None:
    start, body = messages[0], b"".join(m["body"] for m in messages[1:] if "body" in m)
    await send(
        {"type": "http.response.start", "status": start["start"], "headers": start["headers"]}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def read_body(receive: Any) -> bytes:
    """The body :class:`BodyLimit` has already read and checked, as one message."""
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def lifespan(receive: Any, send: Any) -> None:
    """Start-up and shut-down have nothing to do: the replicas load the models."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
