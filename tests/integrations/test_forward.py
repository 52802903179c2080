"""The front that relays requests to model replicas: a replica that fails is an OpenAI error
(or a retry), never a plain-text 500 or a silently cut stream. No Ray here: a replica is a
function from a request to its messages, as Ray's handle gives them."""

from __future__ import annotations

import json

import httpx
import pytest

from rain_integrations.server import ServerLimits, build_app
from rain_integrations.server.forward import front_app, run_asgi
from tests.integrations.live import sse_events
from tests.integrations.test_server import MODEL, body


class ReplicaDied(Exception):
    """What Ray raises when the replica's process is gone (ActorDiedError and the like)."""


def front(call, attempts: int = 2):
    app = front_app(call, max_bytes=1 << 20, body_timeout=5.0, attempts=attempts)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://front")


def replica_of(app, fail_after: int | None = None, fail_times: int = 1):
    """Calls that run ``app``; the first ``fail_times`` die after ``fail_after`` messages."""
    calls: list[int] = []

    async def call(request):
        calls.append(1)
        sent = 0
        async for message in run_asgi(app, request):
            if fail_after is not None and len(calls) <= fail_times and sent == fail_after:
                raise ReplicaDied("the replica's process died")
            sent += 1
            yield message
        if fail_after is not None and len(calls) <= fail_times and sent <= fail_after:
            raise ReplicaDied("the replica's process died")

    return call, calls


@pytest.fixture
def app(generator):
    return build_app(generator, model_name=MODEL, limits=ServerLimits(max_tokens=16))


async def test_a_relayed_request_gets_the_replicas_answer(app) -> None:
    call, calls = replica_of(app)
    async with front(call) as client:
        reply = await client.post("/v1/chat/completions", json=body(seed=3, max_tokens=4))
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] is not None
        streamed = await client.post(
            "/v1/chat/completions", json={**body(max_tokens=4), "stream": True}
        )
        assert sse_events(streamed.text)[-1] == "[DONE]"
        missing = await client.post("/v1/chat/completions", json={**body(), "model": "x"})
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
    assert len(calls) == 3


async def test_a_replica_that_dies_before_answering_is_retried_on_another(app) -> None:
    call, calls = replica_of(app, fail_after=1)  # dies after the response start
    async with front(call) as client:
        reply = await client.post("/v1/chat/completions", json=body(seed=3, max_tokens=4))
    assert reply.status_code == 200, reply.text
    assert len(calls) == 2


async def test_replicas_that_keep_dying_are_a_503_in_openai_shape(app) -> None:
    call, calls = replica_of(app, fail_after=0, fail_times=5)
    async with front(call, attempts=2) as client:
        reply = await client.post("/v1/chat/completions", json=body())
    assert reply.status_code == 503
    error = reply.json()["error"]
    assert error["code"] == "replica_failed" and "ReplicaDied" in error["message"]
    assert len(calls) == 2


async def test_a_stream_whose_replica_dies_ends_with_an_error_event_and_done(app) -> None:
    call, _ = replica_of(app, fail_after=2)  # the start, the role chunk, then death
    async with front(call) as client:
        reply = await client.post(
            "/v1/chat/completions", json={**body(max_tokens=4), "stream": True}
        )
    assert reply.status_code == 200
    events = sse_events(reply.text)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["error"]["code"] == "replica_failed" and events[-1] == "[DONE]"


async def test_the_front_applies_the_body_limit_before_relaying(app) -> None:
    call, calls = replica_of(app)
    app_front = front_app(call, max_bytes=2048, body_timeout=5.0)
    transport = httpx.ASGITransport(app=app_front)
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
        long = [{"role": "user", "content": "x" * 4000}]
        reply = await client.post("/v1/chat/completions", content=json.dumps(body(messages=long)))
    assert reply.status_code == 413 and calls == []


async def test_the_front_serves_its_own_metrics_with_the_key_and_relays_none(app) -> None:
    """Every relayed request and refusal is counted by the front; /metrics is never relayed."""
    from rain_integrations.server.metrics import FRONT, ServerMetrics
    from tests.integrations.test_server_metrics import samples, value

    call, calls = replica_of(app)
    metrics = ServerMetrics(only=FRONT)
    app_front = front_app(call, max_bytes=2048, body_timeout=5.0, metrics=metrics, api_key="k")
    transport = httpx.ASGITransport(app=app_front)
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
        assert (await client.post("/v1/chat/completions", json=body(max_tokens=2))).is_success
        assert (await client.post("/v1/chat/completions", json=body(n=2))).status_code == 400
        long = [{"role": "user", "content": "x" * 4000}]
        too_long = await client.post("/v1/chat/completions", json=body(messages=long))
        assert too_long.status_code == 413
        assert (await client.get("/metrics")).status_code == 401
        scraped = await client.get("/metrics", headers={"Authorization": "Bearer k"})
    assert len(calls) == 2  # the two requests within the body limit, not the scrapes
    got = samples(scraped.text)
    route = "/v1/chat/completions"
    finished = "rain:requests_finished_total"
    assert [value(got, finished, route=route, status=s) for s in ("200", "400", "413")] == [1] * 3
    refused = "rain:requests_refused_total"
    assert value(got, refused, reason="unsupported_parameter") == 1
    assert value(got, refused, reason="request_too_large") == 1
    assert {name for name, _ in got} & {"rain:generation_tokens_total"} == set()  # per replica
