"""uvicorn's HTTP/1.1 protocol with a cap on request heads, in bytes and in seconds.

uvicorn reads a request's head (request line and headers) for as long as the
client keeps sending it: a 128 MB header is read and parsed before any route,
and so before the API key, and a client that sends half a head and waits holds
its connection for good. :class:`GuardedProtocol` counts a head's bytes as
they arrive, before the parser sees them: past ``max_header_bytes`` it answers
431 without parsing the rest, and a head that is not whole ``header_timeout``
seconds after its first byte (or after the connection opened) gets a 408.
Malformed requests (a ``Content-Length`` of ``abc``, two differing ones) get
their 400 in OpenAI's JSON error shape rather than uvicorn's plain text.

Every refusal is followed by a lingering close: the answer is written, the
sending side shut, and whatever the client is still sending is read and thrown
away (up to :data:`DRAIN_BYTES` or :data:`DRAIN_SECONDS`), so that a client
that writes its whole request before reading (``http.client``) reads the
status instead of a connection reset.

It is uvicorn's h11 protocol (h11 always comes with uvicorn), so the server
behaves the same whether or not ``httptools`` is installed.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any, ClassVar, Protocol

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rain_integrations.server.errors import error_body

DRAIN_BYTES = 64 * 1024 * 1024
"""The most a refused client may still send before its connection is closed."""
DRAIN_SECONDS = 2.0
"""How long a refused client may keep sending before its connection is closed."""


class Refusals(Protocol):
    """Told the code of each refusal the protocol makes (the server's metrics)."""

    def refused(self, reason: str) -> None: ...


class GuardedProtocol(H11Protocol):
    """h11 with a head size and a head time limit, and refusals in OpenAI's shape.

    Made per server by :func:`guarded_protocol`, which sets the class limits.
    """

    max_header_bytes: ClassVar[int] = 32 * 1024
    header_timeout: ClassVar[float] = 10.0
    refusals: ClassVar[Refusals | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._drained = 0
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser at most what the head may still take; refuse what is past it."""
        if self._draining:
            self._drain(len(data))
            return
        while data and not self._draining and not self.transport.is_closing():
            if self._reading_head():
                room = self.max_header_bytes - self._head_bytes
                if room <= 0:
                    self._refuse_head_too_large()
                    return
                self._arm_head_timer()
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            else:
                piece, data = data, b""
            super().data_received(piece)
            if not self._reading_head():
                self._head_bytes = 0
                self._cancel_head_timer()

    def send_400_response(self, msg: str) -> None:
        """A request the parser cannot read: the 400 in OpenAI's error shape."""
        message = (
            "the HTTP request is malformed (a bad or repeated Content-Length, a bad header "
            "line or request line); send a well-formed HTTP/1.1 request"
        )
        self.refuse(400, message, "invalid_http_request")

    def _reading_head(self) -> bool:
        """Is the client between requests, or part way through a request's head?"""
        return self.conn.their_state is h11.IDLE

    def _refuse_head_too_large(self) -> None:
        message = (
            f"the request's headers are over {self.max_header_bytes} bytes; send fewer or "
            "shorter headers"
        )
        self.refuse(431, message, "header_too_large")

    def _head_timed_out(self) -> None:
        """The head is not whole in time: 408 (a connection that sent nothing just closes)."""
        self._head_timer = None
        if self._draining or self.transport.is_closing() or not self._reading_head():
            return
        if self._head_bytes == 0:
            self._count("idle_timeout")
            self.transport.close()
            return
        message = (
            f"the request's headers did not arrive within {self.header_timeout:g} s; send the "
            "whole request at once"
        )
        self.refuse(408, message, "header_timeout")

    def refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` now, then close lingering: read and drop what is still sent.

        ``code`` is the error body's ``code`` and the refusal's reason in the metrics.
        """
        self._cancel_head_timer()
        self._count(code)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is under way: no second one on this connection
            return
        self.transport.write(raw_response(status, error_body(status, message, code=code)))
        self._draining = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def _count(self, code: str) -> None:
        if self.refusals is not None:
            self.refusals.refused(code)

    def _drain(self, size: int) -> None:
        self._drained += size
        if self._drained > DRAIN_BYTES:
            self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def raw_response(status: int, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 response with a JSON body that closes the connection."""
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


def guarded_protocol(
    max_header_bytes: int, header_timeout: float, refusals: Refusals | None = None
) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` class with these limits, for ``uvicorn.run(http=...)``."""
    attributes = {
        "max_header_bytes": max_header_bytes,
        "header_timeout": header_timeout,
        "refusals": refusals,
    }
    return type("RainHttpProtocol", (GuardedProtocol,), attributes)
