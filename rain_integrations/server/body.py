"""Reading a request body within a size and a time limit, before the app sees it.

A client can announce a 100 MB body and send 11 bytes, or trickle a body a
byte a second: either would hold a connection (and, once read, memory) for
as long as it likes. This ASGI middleware refuses a body announced or found
larger than the limit with a 413, and one that does not arrive in time with
a 408, both in OpenAI's error shape, before any route runs. A body within the
limits is read whole (it is small: the limit is about a megabyte) and handed
to the app as one message; later ``receive`` calls go to the client, so a
disconnect is still seen.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rain_integrations.server.errors import error_body

DRAIN_BYTES = 64 * 1024 * 1024
"""The most of a refused body read (and dropped) so that its client can read the 413."""
DRAIN_SECONDS = 2.0
"""How long a refused body is read (and dropped) before the 413 goes out regardless."""

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTooLarge(Exception):
    """The body is over the limit (the caller answers 413)."""


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of body per request, read within ``timeout`` s."""

    def __init__(self, app: Any, *, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await discard(receive)
            await refuse(send, 413, self.too_large(f"announces {declared} bytes"))
            return
        try:
            body = await asyncio.wait_for(self.read(receive), self.timeout)
        except BodyTooLarge:
            await discard(receive)
            await refuse(send, 413, self.too_large("is too long"))
            return
        except asyncio.TimeoutError:
            message = (
                f"the request body did not arrive within {self.timeout:g} s; send the whole "
                "body at once"
            )
            await refuse(send, 408, error_body(408, message, code="request_timeout"))
            return
        await self.app(scope, replay(body, receive), send)

    async def read(self, receive: Any) -> bytes:
        """The whole body, or :class:`BodyTooLarge` as soon as it passes the limit."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    def too_large(self, detail: str) -> dict[str, Any]:
        message = (
            f"the request body {detail}; this server takes at most {self.max_bytes} bytes; "
            "send a shorter prompt"
        )
        return error_body(413, message, code="request_too_large")


async def discard(receive: Any) -> None:
    """Read the rest of a refused body and drop it, within the drain bounds (see the module)."""

    async def drop() -> None:
        dropped = 0
        while dropped <= DRAIN_BYTES:
            message = await receive()
            dropped += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(drop(), DRAIN_SECONDS)
    except asyncio.TimeoutError:
        return


def content_length(scope: Scope) -> int | None:
    """The announced ``Content-Length``, or None when absent or unreadable (h11 refuses those)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` once, then whatever the client sends (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: Message = await receive()
        return message

    return again


async def refuse(send: Any, status: int, body: dict[str, Any]) -> None:
    """Answer now, without reading the rest of the body, and close the connection."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
