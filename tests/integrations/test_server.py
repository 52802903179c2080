"""The OpenAI-compatible server on the tiny Llama: shapes, streaming, errors, auth, limits.

Searches run for real (fast preset, a keyword judge); each answer is a few
tokens, so the whole module runs in seconds.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from rain_integrations.server import ServerLimits, build_app
from rain_search.search import RainGenerator
from rain_search.stats import Counters
from tests.integrations.live import running, sse_events, wait_for

MODEL = "tiny"
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "Say hello."}]


def body(**fields) -> dict:
    return {"model": MODEL, "messages": HELLO, "max_tokens": 8, **fields}


def chat(client, **fields) -> dict:
    response = client.post("/v1/chat/completions", json=body(**fields))
    assert response.status_code == 200, response.text
    return response.json()


def stream(client, path: str = "/v1/chat/completions", **fields) -> list:
    payload = {k: v for k, v in body(**fields).items() if v is not None}
    response = client.post(path, json={**payload, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_events(response.text)


# -- plain answers ------------------------------------------------------------------


def test_chat_completion_has_the_openai_shape_and_rain_statistics(client) -> None:
    reply = chat(client, seed=3)
    assert reply["object"] == "chat.completion" and reply["id"].startswith("chatcmpl-")
    assert reply["model"] == MODEL
    (choice,) = reply["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    rain = reply["rain"]
    assert choice["message"]["content"] == "".join(rain["token_sets"])
    assert "e" not in choice["message"]["content"]  # the keyword judge was obeyed
    usage = reply["usage"]
    assert usage["completion_tokens"] == rain["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert rain["mode"] == "rain" and rain["seed"] == 3 and rain["steps"] >= 1
    assert rain["iterations"] >= rain["steps"] and rain["forward_calls"] > 0


def test_usage_counts_the_chat_template_prompt(client, generator) -> None:
    from rain_search.models import encode_prompt

    reply = chat(client)
    assert reply["usage"]["prompt_tokens"] == len(encode_prompt(generator.tokenizer, HELLO))


def test_text_completion_continues_the_raw_prompt(client, generator) -> None:
    response = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6}
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["object"] == "text_completion"
    assert reply["choices"][0]["text"] == "".join(reply["rain"]["token_sets"])
    assert reply["usage"]["prompt_tokens"] == len(generator.tokenizer.encode("Once upon a time"))


def test_same_seed_same_answer_and_the_seed_is_reported(client) -> None:
    first, second = chat(client, seed=11), chat(client, seed=11)
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["rain"]["seed"] == second["rain"]["seed"] == 11


def test_rain_settings_reach_the_search(client) -> None:
    rain = {
        "preset": "fast",
        "max_iterations": 4,
        "min_fresh_iterations": 4,
        "num_children": 2,
        "parallel_leaves": 1,  # one leaf at a time: exactly the visits asked for
    }
    reply = chat(client, rain=rain)
    stats = reply["rain"]
    assert stats["iterations"] <= 4 * stats["steps"]
    short = chat(client, rain={"max_new_tokens": 1}, max_tokens=None)
    assert short["usage"]["completion_tokens"] <= 1


# One leaf at a time, so a run cut by a stop sequence follows the full run up to it
# (a stop changes what the judge reads, which a wider search may route around).
ONE_LEAF = {"parallel_leaves": 1}

LONG_CANDIDATES = [
    ([{"role": "user", "content": prompt}], seed)
    for prompt in ("Count to ten", "Tell me a story")
    for seed in range(6)
]
"""Prompts and seeds among which the tiny random model gives some answers of 5+ tokens."""


def long_answer(client) -> tuple[list, int, str]:
    """The first candidate prompt and seed whose answer is 5 characters or more."""
    for messages, seed in LONG_CANDIDATES:
        text = chat(client, seed=seed, max_tokens=16, messages=messages, rain=ONE_LEAF)
        text = text["choices"][0]
        if len(text["message"]["content"]) >= 5:
            return messages, seed, text["message"]["content"]
    raise AssertionError("no candidate gave a long answer; add prompts to LONG_CANDIDATES")


def test_a_stop_sequence_ends_the_answer_before_it(client) -> None:
    messages, seed, full = long_answer(client)
    stop = full[2:5]
    cut = chat(
        client, seed=seed, max_tokens=16, messages=messages, stop=["zzz", stop], rain=ONE_LEAF
    )
    assert cut["choices"][0]["message"]["content"] == full[: full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["rain"]["finish_reason"] == "stop"


def test_a_request_timeout_returns_the_answer_so_far(generator) -> None:
    app = build_app(
        judged_by(generator, SlowJudge(0.05)), model_name=MODEL, limits=ServerLimits(timeout=2.0)
    )
    with TestClient(app) as test_client:
        story = [{"role": "user", "content": "Tell me a story"}]
        reply = test_client.post(
            "/v1/chat/completions", json=body(messages=story, rain={"timeout": 0.2})
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["rain"]["finish_reason"] == "budget"
        assert reply.json()["choices"][0]["finish_reason"] == "length"
        too_long = test_client.post("/v1/chat/completions", json=body(rain={"timeout": 60}))
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "rain.timeout"


# -- streaming ----------------------------------------------------------------------


def test_a_stream_has_one_chunk_per_step_then_finish_usage_and_done(client) -> None:
    whole = chat(client, seed=2)
    events = stream(client, seed=2, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    opening, *steps, closing, usage, _ = events
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(steps) == whole["rain"]["steps"]
    assert [s["rain"]["step"] for s in steps] == list(range(len(steps)))
    text = "".join(s["choices"][0]["delta"]["content"] for s in steps)
    assert text == whole["choices"][0]["message"]["content"]
    assert all(s["object"] == "chat.completion.chunk" and s["id"] == opening["id"] for s in steps)
    assert closing["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert closing["rain"]["token_sets"] == whole["rain"]["token_sets"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]


def test_no_usage_chunk_unless_asked(client) -> None:
    events = stream(client, seed=2)
    assert events[-1] == "[DONE]"
    assert not any("usage" in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_completions_stream(client) -> None:
    events = stream(client, "/v1/completions", prompt="Once", messages=None)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_streams_one_after_another_on_one_generator(client) -> None:
    """Each stream runs on its own thread; the generator's lock must not leak between them."""
    for seed in range(3):
        assert stream(client, seed=seed)[-1] == "[DONE]"


# -- errors -------------------------------------------------------------------------

BAD_REQUESTS = [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"top_p": 0.5}, "top_p"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"rain": {"bogus": 1}}, "rain.bogus"),
    ({"rain": {"num_children": 0}}, "rain.num_children"),
    ({"rain": {"preset": "nope"}}, "rain.preset"),
    ({"rain": {"template": "/etc/passwd"}}, "rain.template"),
    ({"rain": {"max_new_tokens": 4}}, "rain.max_new_tokens"),  # max_tokens is set too
    ({"max_tokens": 65}, "max_tokens"),  # over the server's limit of 64
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "max_completion_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"stop": ["ok", ""]}, "stop"),
    ({"frobnicate": True}, "frobnicate"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content"),
    ({"messages": [{"role": "assistant", "content": "only me"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 5000}]}, "messages"),  # > 4096 tokens
]


@pytest.mark.parametrize(("fields", "param"), BAD_REQUESTS)
def test_bad_requests_get_an_openai_400_naming_the_field(client, fields, param) -> None:
    response = client.post("/v1/chat/completions", json=body(**fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"prompt": ["a", "b"]}, "prompt"), ({"echo": True}, "echo"), ({"prompt": " "}, "prompt")],
)
def test_bad_completion_requests(client, fields, param) -> None:
    payload = {"model": MODEL, "prompt": "Hi", "max_tokens": 4, **fields}
    response = client.post("/v1/completions", json=payload)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_token_limit_holds_however_the_length_is_asked(client) -> None:
    for rain in ({"max_new_tokens": "100"}, {"preset": "paper", "max_new_tokens": 65}):
        response = client.post("/v1/chat/completions", json=body(max_tokens=None, rain=rain))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "rain.max_new_tokens"


def test_a_presets_length_is_capped_to_the_servers_limit(generator) -> None:
    app = build_app(generator, model_name=MODEL, limits=ServerLimits(max_tokens=3))
    with TestClient(app) as test_client:
        replies = [
            chat(test_client, max_tokens=None, messages=messages, seed=seed)
            for messages, seed in LONG_CANDIDATES
        ]
    lengths = [reply["usage"]["completion_tokens"] for reply in replies]
    assert max(lengths) == 3  # the fast preset's 64, capped to 3
    assert any(reply["rain"]["finish_reason"] == "length" for reply in replies)


def test_a_lone_surrogate_is_a_400_not_a_500(client) -> None:
    raw = (
        '{"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "a\\ud800"}]}'
    )
    response = client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "lone surrogate" in response.json()["error"]["message"]


def test_invalid_json_and_unknown_model(client) -> None:
    response = client.post(
        "/v1/chat/completions", content="{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "error" in response.json()
    response = client.post("/v1/chat/completions", json={**body(), "model": "gpt-4"})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "model" and "tiny" in response.text


def test_a_judge_template_needs_self_evaluation(client) -> None:
    response = client.post("/v1/chat/completions", json=body(rain={"template": "helpful"}))
    assert response.status_code == 400
    assert "cannot change its judge" in response.json()["error"]["message"]


def failing_judge(text: str) -> float:
    raise RuntimeError("judge offline")


def test_a_failing_search_is_a_500_in_openai_shape(generator) -> None:
    broken = RainGenerator(
        generator.model, generator.tokenizer, "fast", evaluator=failing_judge, embedder="hidden"
    )
    with TestClient(build_app(broken, model_name=MODEL)) as test_client:
        response = test_client.post("/v1/chat/completions", json=body())
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "server_error" and "judge offline" in error["message"]
        events = sse_events(
            test_client.post("/v1/chat/completions", json={**body(), "stream": True}).text
        )
        assert "judge offline" in events[-2]["error"]["message"] and events[-1] == "[DONE]"


def test_a_generator_that_cannot_be_built_is_a_500_not_a_hang(generator) -> None:
    def cannot_load() -> RainGenerator:
        raise OSError("no weights here")

    app = build_app(cannot_load, model_name=MODEL, preload=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        assert test_client.get("/health").json()["status"] == "loading"
        response = test_client.post("/v1/chat/completions", json=body())
        assert response.status_code == 500 and "no weights here" in response.text


# -- access -------------------------------------------------------------------------


def test_the_api_key_is_required_on_v1_routes_only(client) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        response = client.post("/v1/chat/completions", json=body(), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/models", headers=headers).status_code == 401
    assert client.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [MODEL]


def test_without_a_key_no_auth_is_asked(generator) -> None:
    with TestClient(build_app(generator, model_name=MODEL)) as open_client:
        assert open_client.post("/v1/chat/completions", json=body()).status_code == 200


# -- limits and cancellation on a live server ------------------------------------------


class SlowJudge:
    """An uncached judge that takes ``seconds`` per response (no e: good) and notes each call.

    With ``hold`` it waits for that event first, so a search stays busy until released.
    """

    def __init__(self, seconds: float = 0.0, hold: threading.Event | None = None) -> None:
        self.counters = Counters()
        self.seconds, self.hold = seconds, hold
        self.calls: list[float] = []

    def score(self, prompt: str, responses: list[str]) -> list[float]:
        if self.hold is not None:
            self.hold.wait(30)
        self.calls.append(time.monotonic())
        time.sleep(self.seconds)
        return [-1.0 if "e" in r else 1.0 for r in responses]


SLOW_STEPS = {"max_iterations": 400, "min_fresh_iterations": 400, "early_stop_visits": 10_000}
"""Every step runs 400 iterations: with a 0.02 s judge, 8 s for the first step alone."""


def judged_by(generator: RainGenerator, judge: SlowJudge) -> RainGenerator:
    return RainGenerator(
        generator.model, generator.tokenizer, "fast", evaluator=judge, embedder="hidden"
    )


def test_a_full_queue_gets_429_and_queued_requests_still_finish(generator) -> None:
    release = threading.Event()
    held = judged_by(generator, SlowJudge(hold=release))
    limits = ServerLimits(max_concurrent=1, max_queue=1)
    app = build_app(held, model_name=MODEL, limits=limits)
    with running(app) as url:
        answers: list[httpx.Response] = []

        def ask() -> None:
            answers.append(httpx.post(f"{url}/v1/chat/completions", json=body(), timeout=60))

        first = threading.Thread(target=ask)
        first.start()
        wait_for(lambda: httpx.get(f"{url}/health").json()["running"] == 1)
        second = threading.Thread(target=ask)
        second.start()
        wait_for(lambda: httpx.get(f"{url}/health").json()["waiting"] == 1)
        refused = httpx.post(f"{url}/v1/chat/completions", json=body(), timeout=10)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        release.set()
        first.join(60)
        second.join(60)
        assert [a.status_code for a in answers] == [200, 200]
        assert httpx.get(f"{url}/health").json()["searches"] == {"completed": 2}


def test_a_client_that_leaves_mid_stream_cancels_its_search(generator) -> None:
    judge = SlowJudge(0.02)
    calls = judge.calls
    slow = judged_by(generator, judge)
    app = build_app(slow, model_name=MODEL, heartbeat=0.1)
    long = body(max_tokens=32, rain=SLOW_STEPS)
    with running(app) as url:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json={**long, "stream": True}, timeout=30
        ) as response:
            lines = response.iter_lines()  # kept: closing it would close the connection
            first = next(lines)
            assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"]
            wait_for(lambda: len(calls) > 3)
            assert httpx.get(f"{url}/health").json()["running"] == 1
        left = time.monotonic()
        wait_for(lambda: httpx.get(f"{url}/health").json()["searches"].get("cancelled") == 1, 5)
        assert httpx.get(f"{url}/health").json()["running"] == 0
        assert max(calls) - left < 2.0  # a whole first step would take 400 x 0.02 s = 8 s


def test_a_client_that_gives_up_on_a_plain_request_cancels_its_search(generator) -> None:
    judge = SlowJudge(0.02)
    calls = judge.calls
    slow = judged_by(generator, judge)
    app = build_app(slow, model_name=MODEL)
    long = body(max_tokens=32, rain=SLOW_STEPS)
    with running(app) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=long, timeout=0.5)
        wait_for(lambda: httpx.get(f"{url}/health").json()["searches"].get("cancelled") == 1, 5)
        assert time.monotonic() - min(calls) < 5.0


def test_the_server_freezes_the_heap_once_its_model_is_loaded(generator) -> None:
    import gc

    gc.unfreeze()
    with TestClient(build_app(lambda: generator, model_name=MODEL)) as test_client:
        assert gc.get_freeze_count() > 0  # the lifespan loaded the model, then froze
        gc.unfreeze()
        assert test_client.get("/health").json()["status"] == "ok"
        assert gc.get_freeze_count() == 0  # once: later requests do not freeze again
