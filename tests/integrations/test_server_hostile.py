"""The server against hostile clients at the HTTP level, on a real socket with the protocol
``rain serve`` runs: huge and slow request heads, malformed framing, oversized bodies sent
by clients that write everything before reading. Each gets an OpenAI-shaped refusal it can
read, and no refused request runs a search."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from rain_integrations.server import ServerLimits, build_app
from rain_integrations.server.main import uvicorn_options
from rain_integrations.server.metrics import ServerMetrics
from tests.integrations.live import running
from tests.integrations.test_server import AUTH, KEY, MODEL, body

LIMITS = ServerLimits(header_timeout=0.5, max_header_bytes=8 * 1024)


@pytest.fixture
def served(generator) -> Iterator[tuple[str, ServerMetrics]]:
    """The app behind a key, served by uvicorn with ``rain serve``'s guarded protocol."""
    metrics = ServerMetrics()
    app = build_app(generator, api_key=KEY, model_name=MODEL, limits=LIMITS, metrics=metrics)
    with running(app, **uvicorn_options(LIMITS, metrics)) as url:
        yield url, metrics


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return str(parts.hostname), int(parts.port or 80)


def exchange(url: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send ``request`` whole on a new connection, then read: the status, JSON body and rest.

    Writing everything before reading is what ``http.client`` does; a server that
    closed on it mid-write would make ``sendall`` fail here.
    """
    with socket.create_connection(address(url), timeout=30) as conn:
        conn.sendall(request)
        data = Reader(conn).result()
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(dict(header_lines(head)).get(b"content-length", b"0"))
    return int(head.split(b" ")[1]), json.loads(rest[:length]), rest[length:]


def header_lines(head: bytes) -> Iterator[tuple[bytes, bytes]]:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        yield name.strip().lower(), value.strip()


class Reader:
    """Reads a connection to its end on a thread, while the test writes to it."""

    def __init__(self, conn: socket.socket) -> None:
        self.data = bytearray()
        self.thread = threading.Thread(target=self._read, args=(conn,))
        self.thread.start()

    def _read(self, conn: socket.socket) -> None:
        try:
            while chunk := conn.recv(65536):
                self.data.extend(chunk)
        except OSError:
            return

    def result(self) -> bytes:
        self.thread.join(30)
        return bytes(self.data)


def refusals(metrics: ServerMetrics) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "rain:requests_refused":
            return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("total")}
    return {}


# -- request heads -------------------------------------------------------------------


def test_a_32_mb_header_is_refused_with_a_431_before_it_is_parsed(served) -> None:
    url, metrics = served
    huge = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 << 20) + b"\r\n\r\n"
    status, reply, rest = exchange(url, huge)
    assert status == 431 and reply["error"]["code"] == "header_too_large"
    assert "8192 bytes" in reply["error"]["message"] and rest == b""
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    assert refusals(metrics) == {"header_too_large": 1}


def test_a_header_within_the_cap_passes_and_the_cap_holds_on_a_kept_alive_connection(
    served,
) -> None:
    url, _ = served
    with httpx.Client(headers=AUTH, timeout=10) as client:
        assert client.get(f"{url}/v1/models", headers={"X-Pad": "a" * 6000}).status_code == 200
        refused = client.get(f"{url}/v1/models", headers={"X-Pad": "a" * 9000})
        assert refused.status_code == 431
        assert client.get(f"{url}/v1/models").status_code == 200  # on a new connection


def test_slow_headers_get_a_408_and_their_connections_are_closed(served) -> None:
    """50 clients that send part of a head and a byte now and then, as a slowloris does."""
    url, metrics = served
    conns = [socket.create_connection(address(url), timeout=30) for _ in range(50)]
    for conn in conns:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    readers = [Reader(conn) for conn in conns]
    for _ in range(3):
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sendall(b"a")
        time.sleep(0.1)
    answers = [reader.result() for reader in readers]  # each ends when its connection closes
    for conn in conns:
        conn.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[0][:80]
    assert json.loads(answers[0].partition(b"\r\n\r\n")[2])["error"]["code"] == "header_timeout"
    assert refusals(metrics) == {"header_timeout": 50}


def test_a_connection_that_sends_nothing_is_closed(served) -> None:
    url, _ = served
    with socket.create_connection(address(url), timeout=30) as conn:
        assert conn.recv(1024) == b""


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: abc\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 2\r\nContent-Length: 3\r\n",
    ],
)
def test_a_malformed_content_length_is_a_json_400(served, framing) -> None:
    url, metrics = served
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n{}"
    status, reply, _ = exchange(url, request)
    assert status == 400 and reply["error"]["code"] == "invalid_http_request"
    assert "Content-Length" in reply["error"]["message"]
    assert refusals(metrics) == {"invalid_http_request": 1}


# -- oversized bodies, read by every client -----------------------------------------------


def oversized(size: int) -> bytes:
    return json.dumps(body(messages=[{"role": "user", "content": "x" * size}])).encode()


@pytest.mark.parametrize("megabytes", [2, 8])
def test_http_client_reads_the_413_of_an_oversized_body(served, megabytes) -> None:
    """``http.client`` writes the whole body before it reads: the body is drained first."""
    url, _ = served
    host, port = address(url)
    for _ in range(3):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        headers = {"Content-Type": "application/json", **AUTH}
        conn.request(
            "POST", "/v1/chat/completions", body=oversized(megabytes << 20), headers=headers
        )
        response = conn.getresponse()
        error = json.loads(response.read())["error"]
        conn.close()
        assert response.status == 413 and error["code"] == "request_too_large"
        assert "1048576 bytes" in error["message"]


@pytest.mark.parametrize("megabytes", [2, 8])
def test_the_openai_sdk_reads_the_413_and_no_refused_request_runs(served, megabytes) -> None:
    """The SDK retries connection errors: exactly one 413 per call shows none happened."""
    url, metrics = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    content = "x" * (megabytes << 20)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=2
            )
        assert caught.value.status_code == 413 and "1048576 bytes" in caught.value.message
    assert refusals(metrics) == {"request_too_large": 3}
    assert httpx.get(f"{url}/health").json()["searches"] == {}
