"""Helpers for server tests: a uvicorn server on a free loopback port, and SSE parsing."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from rain_integrations.server.limits import ServerLimits
from rain_integrations.server.main import uvicorn_options


@contextmanager
def running(app: Any, **options: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port in a thread; yields the base URL.

    It runs with the HTTP protocol ``rain serve`` gives uvicorn (the request-head
    caps of the default :class:`ServerLimits`); ``options`` go to ``uvicorn.Config``
    over those.
    """
    options = {**uvicorn_options(ServerLimits()), **options}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def sse_events(body: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body: JSON objects, and the final ``"[DONE]"``."""
    events: list[Any] = []
    for line in body.splitlines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.02)
