"""The server under hostile or unlucky requests: bad keys, huge or slow bodies, loose types,
queue waits and timeouts. Each case answers with a clear OpenAI-shaped status."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from rain_integrations.server import ServerLimits, build_app
from tests.integrations.live import running, sse_events, wait_for
from tests.integrations.test_server import KEY, MODEL, SlowJudge, body, judged_by

SLOW_STEPS = {"max_iterations": 400, "min_fresh_iterations": 400, "early_stop_visits": 10_000}


def refused(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


# -- the API key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [b"Bearer K\xe9", "Bearer clé".encode(), b"Bearer", b"Basic " + KEY.encode(), b"\xff"]
)
def test_a_malformed_or_non_ascii_key_is_a_401_not_a_500(client, header) -> None:
    response = client.post("/v1/chat/completions", json=body(), headers={"Authorization": header})
    assert refused(response, 401)["code"] == "invalid_api_key"


def test_a_non_ascii_key_of_the_server_is_matched_as_utf8(generator) -> None:
    app = build_app(generator, api_key="clé", model_name=MODEL)
    with TestClient(app) as test_client:
        right = {"Authorization": "Bearer clé".encode()}
        assert test_client.post("/v1/chat/completions", json=body(), headers=right).is_success


# -- sizes, checked before any tokenising ------------------------------------------------


@pytest.fixture
def no_tokenising(generator, monkeypatch) -> list:
    """Notes every prompt the generator is asked to tokenise."""
    calls: list = []
    encode = generator.encode

    def noted(prompt, system):
        calls.append(prompt)
        return encode(prompt, system)

    monkeypatch.setattr(generator, "encode", noted)
    return calls


def test_a_prompt_too_long_in_characters_is_refused_untokenised(client, no_tokenising) -> None:
    huge = [{"role": "user", "content": "x" * (16 * 4096 + 1)}]
    error = refused(client.post("/v1/chat/completions", json=body(messages=huge)), 400, "messages")
    assert error["code"] == "context_length_exceeded" and "characters" in error["message"]
    split = [{"role": "user", "content": "x" * 40_000}, {"role": "user", "content": "y" * 40_000}]
    refused(client.post("/v1/chat/completions", json=body(messages=split)), 400, "messages")
    assert no_tokenising == []


def test_too_many_messages_are_refused_untokenised(client, no_tokenising) -> None:
    many = [{"role": "user", "content": "hi"}] * 257
    error = refused(client.post("/v1/chat/completions", json=body(messages=many)), 400, "messages")
    assert "257 messages" in error["message"]
    assert no_tokenising == []


def test_a_completion_prompt_too_long_in_characters(client, monkeypatch) -> None:
    from rain_integrations.server import calls

    tokenised: list = []
    monkeypatch.setattr(calls, "text_ids", lambda generator, text: tokenised.append(text))
    payload = {"model": MODEL, "prompt": "x" * (16 * 4096 + 1), "max_tokens": 4}
    refused(client.post("/v1/completions", json=payload), 400, "prompt")
    assert tokenised == []


def test_a_body_over_the_size_limit_is_a_413(generator) -> None:
    app = build_app(generator, model_name=MODEL, limits=ServerLimits(max_body_bytes=4096))
    with TestClient(app) as test_client:
        long = [{"role": "user", "content": "x" * 5000}]
        error = refused(test_client.post("/v1/chat/completions", json=body(messages=long)), 413)
        assert error["code"] == "request_too_large" and "4096 bytes" in error["message"]
        assert test_client.post("/v1/chat/completions", json=body()).is_success


def raw_post(url: str, head_length: int, sent: bytes, wait: float = 10.0) -> tuple[int, dict]:
    """POST ``sent`` to ``url`` announcing ``head_length`` bytes; the status and JSON body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {head_length}\r\n\r\n".encode()
            + sent
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)  # a server that never answers: socket.timeout
            if not chunk:
                break
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_a_body_announced_too_long_or_sent_too_slowly_is_refused_at_once(generator) -> None:
    limits = ServerLimits(body_timeout=0.5)
    with running(build_app(generator, model_name=MODEL, limits=limits)) as url:
        status, reply = raw_post(url, 100 * 1024 * 1024, b'{"model": 1}')
        assert status == 413 and reply["error"]["code"] == "request_too_large"
        status, reply = raw_post(url, 100, b'{"model": 1}')  # 12 of the 100 bytes, then nothing
        assert status == 408 and reply["error"]["code"] == "request_timeout"
        assert httpx.post(f"{url}/v1/chat/completions", json=body(), timeout=30).is_success


# -- strict types and stop sequences -----------------------------------------------------

STRICT = [
    ({"max_tokens": "12"}, "max_tokens"),
    ({"max_tokens": 12.0}, "max_tokens"),
    ({"seed": True}, "seed"),
    ({"stream": 1}, "stream"),
    ({"temperature": "0.5"}, "temperature"),
    ({"rain": {"max_iterations": "12"}}, "rain.max_iterations"),
    ({"rain": {"swap_labels": 1}}, "rain.swap_labels"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": "x" * 65}, "stop"),
    ({"rain": {"stop_sequences": ["a", "b", "c", "d", "e"]}}, "rain.stop_sequences"),
]


@pytest.mark.parametrize(("fields", "param"), STRICT)
def test_loose_types_and_too_many_stops_are_400s(client, fields, param) -> None:
    refused(client.post("/v1/chat/completions", json=body(**fields)), 400, param)


def test_four_stop_sequences_and_a_whole_number_temperature_are_fine(client) -> None:
    reply = client.post(
        "/v1/chat/completions", json=body(stop=["a", "b", "c", "x" * 64], temperature=1)
    )
    assert reply.is_success, reply.text


# -- queue waits and timeouts -------------------------------------------------------------


def test_queue_wait_is_not_charged_and_the_servers_timeout_is_a_504(generator) -> None:
    """The first search is held past the 6 s timeout while the second waits for its slot."""
    release = threading.Event()
    held = judged_by(generator, SlowJudge(hold=release))
    limits = ServerLimits(max_concurrent=1, max_queue=1, timeout=6.0)
    with running(build_app(held, model_name=MODEL, limits=limits)) as url:
        answers: dict[str, httpx.Response] = {}

        def ask(name: str) -> None:
            short = body(max_tokens=4)
            answers[name] = httpx.post(f"{url}/v1/chat/completions", json=short, timeout=60)

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        wait_for(lambda: httpx.get(f"{url}/health").json()["running"] == 1)
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        wait_for(lambda: httpx.get(f"{url}/health").json()["waiting"] == 1)
        time.sleep(6.5)  # the second has now waited longer than the whole timeout
        release.set()
        first.join(60)
        second.join(60)
    error = refused(answers["first"], 504)
    assert error["code"] == "timeout" and error["type"] == "timeout_error"
    assert answers["second"].status_code == 200, answers["second"].text
    assert answers["second"].json()["rain"]["finish_reason"] != "budget"


def test_a_request_that_cannot_get_a_slot_in_time_is_a_503(generator) -> None:
    release = threading.Event()
    held = judged_by(generator, SlowJudge(hold=release))
    limits = ServerLimits(max_concurrent=1, max_queue=1, max_wait=0.5)
    with running(build_app(held, model_name=MODEL, limits=limits)) as url:
        first = threading.Thread(
            target=lambda: httpx.post(f"{url}/v1/chat/completions", json=body(), timeout=60)
        )
        first.start()
        wait_for(lambda: httpx.get(f"{url}/health").json()["running"] == 1)
        for stream in (False, True):
            late = httpx.post(
                f"{url}/v1/chat/completions", json={**body(), "stream": stream}, timeout=30
            )
            assert refused(late, 503)["code"] == "server_busy"
        assert httpx.get(f"{url}/health").json()["waiting"] == 0
        release.set()
        first.join(60)


def test_a_stream_cut_by_the_servers_timeout_ends_with_an_error_event(generator) -> None:
    slow = judged_by(generator, SlowJudge(0.05))
    app = build_app(slow, model_name=MODEL, limits=ServerLimits(timeout=0.5))
    with TestClient(app) as test_client:
        response = test_client.post(
            "/v1/chat/completions",
            json={**body(max_tokens=32, rain=SLOW_STEPS), "stream": True},
        )
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "timeout"
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-2] if e.get("choices")]
    assert set(finishes) == {None}  # no chunk claims the answer ended normally


def test_an_answer_cut_by_the_requests_own_budget_is_its_answer_so_far(generator) -> None:
    slow = judged_by(generator, SlowJudge(0.05))
    app = build_app(slow, model_name=MODEL, limits=ServerLimits(timeout=30))
    with TestClient(app) as test_client:
        reply = test_client.post(
            "/v1/chat/completions",
            json=body(max_tokens=32, rain={**SLOW_STEPS, "max_forward_calls": 5}),
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["rain"]["finish_reason"] == "budget"
    assert reply.json()["choices"][0]["finish_reason"] == "length"


# -- memory ------------------------------------------------------------------------------


def test_each_finished_search_gives_freed_heap_memory_back(client, monkeypatch) -> None:
    from rain_integrations.server import app as app_module

    trims: list[int] = []
    monkeypatch.setattr(app_module, "trim_heap", lambda: trims.append(1) or True)
    assert client.post("/v1/chat/completions", json=body()).is_success
    streamed = client.post("/v1/chat/completions", json={**body(), "stream": True})
    assert streamed.text.rstrip().endswith("[DONE]")
    assert trims == [1, 1]


def test_the_heap_can_be_trimmed_on_this_system() -> None:
    import platform

    from rain_integrations.server.memory import trim_heap

    assert trim_heap() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
