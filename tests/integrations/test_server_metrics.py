"""``GET /metrics`` after real requests: every counter moved by what was sent and answered;
the server's timeout as a real bound that ``/health`` counts as such; what needs the key."""

from __future__ import annotations

import threading

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from rain_integrations.server import ServerLimits, build_app
from tests.integrations.live import running, sse_events, wait_for
from tests.integrations.test_server import (
    AUTH,
    KEY,
    MODEL,
    SLOW_STEPS,
    SlowJudge,
    body,
    judged_by,
)

CHAT = "/v1/chat/completions"


def scrape(client: TestClient | httpx.Client, url: str = "") -> dict[tuple[str, tuple], float]:
    """Every sample of ``GET /metrics``, by name and sorted labels."""
    response = client.get(f"{url}/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus' text format as ``{(name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_requests_sent_and_the_work_they_cost(client) -> None:
    answers = [client.post(CHAT, json=body(seed=seed)).json() for seed in (1, 2)]
    streamed = client.post(
        CHAT, json=body(seed=3, stream=True, stream_options={"include_usage": True})
    )
    events = sse_events(streamed.text)
    usages = [a["usage"] for a in answers] + [events[-2]["usage"]]
    stats = [a["rain"] for a in answers] + [events[-3]["rain"]]
    assert client.post(CHAT, json=body(n=2)).status_code == 400
    assert client.post(CHAT, json=body(), headers={"Authorization": "Bearer no"}).status_code == 401
    assert client.get("/v1/models").status_code == 200

    got = scrape(client)
    finished = "rain:requests_finished_total"
    assert value(got, finished, route=CHAT, status="200") == 3
    assert value(got, finished, route=CHAT, status="400") == 1
    assert value(got, finished, route=CHAT, status="401") == 1
    assert value(got, finished, route="/v1/models", status="200") == 1
    refused = "rain:requests_refused_total"
    assert value(got, refused, reason="unsupported_parameter") == 1
    assert value(got, refused, reason="invalid_api_key") == 1
    success = sum(v for (name, _), v in got.items() if name == "rain:request_success_total")
    assert success == 3
    assert value(got, "rain:generation_tokens_total") == sum(u["completion_tokens"] for u in usages)
    assert value(got, "rain:prompt_tokens_total") == sum(u["prompt_tokens"] for u in usages)
    assert value(got, "rain:search_iterations_total") == sum(s["iterations"] for s in stats)
    assert value(got, "rain:forward_calls_total") == sum(s["forward_calls"] for s in stats)
    for histogram in ("time_to_first_token", "request_queue_time", "e2e_request_latency"):
        assert value(got, f"rain:{histogram}_seconds_count") == 3, histogram
    assert value(got, "rain:num_requests_running") == value(got, "rain:num_requests_waiting") == 0


def test_the_gauges_show_a_running_and_a_waiting_search(generator) -> None:
    release = threading.Event()
    held = judged_by(generator, SlowJudge(hold=release))
    app = build_app(held, model_name=MODEL, limits=ServerLimits(max_concurrent=1, max_queue=1))
    with running(app) as url, httpx.Client(timeout=60) as client:
        asks = [
            threading.Thread(target=lambda: httpx.post(f"{url}{CHAT}", json=body(), timeout=60))
            for _ in range(2)
        ]
        for ask in asks:
            ask.start()
        wait_for(lambda: value(scrape(client, url), "rain:num_requests_waiting") == 1)
        assert value(scrape(client, url), "rain:num_requests_running") == 1
        release.set()
        for ask in asks:
            ask.join(60)
        assert value(scrape(client, url), "rain:num_requests_running") == 0


def test_the_servers_timeout_cuts_a_long_first_step_and_health_counts_it_timed_out(
    generator,
) -> None:
    """A first step of 400 slow iterations cannot stop itself: the server answers at its
    deadline and cancels the search, whose slot comes back when it stops."""
    judge = SlowJudge(0.02)
    slow = judged_by(generator, judge)
    app = build_app(slow, model_name=MODEL, limits=ServerLimits(timeout=0.5))
    with running(app) as url:
        reply = httpx.post(f"{url}{CHAT}", json=body(max_tokens=32, rain=SLOW_STEPS), timeout=60)
        assert reply.status_code == 504, reply.text
        error = reply.json()["error"]
        assert (
            error["code"] == "timeout" and "0.5 s timeout (0 tokens committed)" in error["message"]
        )
        wait_for(lambda: httpx.get(f"{url}/health").json()["searches"] == {"timed_out": 1}, 10)
        calls = len(judge.calls)
        assert calls < 400  # the step was cut, not searched to its end
        assert httpx.get(f"{url}/health").json()["running"] == 0


def test_metrics_and_the_schema_need_the_key_and_the_browser_docs_are_off(generator) -> None:
    app = build_app(generator, api_key=KEY, model_name=MODEL)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "RAIN"
        assert client.get("/docs").status_code == 404
        assert client.get("/health").status_code == 200
    with TestClient(build_app(generator, model_name=MODEL)) as open_client:
        assert open_client.get("/metrics").status_code == 200
        assert open_client.get("/docs").status_code == 200


def test_a_failure_of_the_server_itself_is_counted_as_a_500() -> None:
    def no_model():
        raise RuntimeError("the model could not be loaded")

    app = build_app(no_model, model_name=MODEL, preload=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(CHAT, json=body()).status_code == 500
        got = scrape(client)
    assert value(got, "rain:requests_finished_total", route=CHAT, status="500") == 1
