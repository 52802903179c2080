"""``rain serve``: its defaults, and the app it hands uvicorn (uvicorn itself is stubbed)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rain_integrations.server import main as server_main
from rain_search.cli import build_parser, main


@pytest.fixture
def served(monkeypatch) -> dict:
    """What ``rain serve`` passed to ``uvicorn.run``, instead of serving forever."""
    seen: dict = {}

    def fake_run(app, **options) -> None:
        seen.update(options, app=app)

    monkeypatch.setattr(server_main.uvicorn, "run", fake_run)
    return seen


def test_defaults_bind_loopback_and_read_the_key_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RAIN_API_KEY", "from-env")
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000
    assert args.api_key == "from-env"
    assert args.max_concurrent == 8 and args.max_queue == 8


def test_serve_builds_an_app_that_answers_with_the_key(served, model_dir, capsys) -> None:
    args = ["serve", "--model", model_dir, "--device", "cpu", "--preset", "fast"]
    args += ["--evaluator", "avoid:e", "--embedder", "hidden", "--api-key", "k", "--quiet"]
    args += ["--max-tokens", "16", "--port", "8123"]
    assert main(args) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == 8123
    request = {"model": model_dir, "messages": [{"role": "user", "content": "Hi"}]}
    with TestClient(served["app"]) as client:
        assert client.post("/v1/chat/completions", json=request).status_code == 401
        reply = client.post(
            "/v1/chat/completions", json=request, headers={"Authorization": "Bearer k"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] <= 16  # the server's --max-tokens
        too_many = client.post(
            "/v1/chat/completions",
            json={**request, "max_tokens": 17},
            headers={"Authorization": "Bearer k"},
        )
        assert too_many.status_code == 400


def test_an_open_address_without_a_key_is_warned_about(served, model_dir, capsys) -> None:
    args = ["serve", "--model", model_dir, "--device", "cpu", "--preset", "fast"]
    args += ["--evaluator", "avoid:e", "--embedder", "hidden", "--host", "0.0.0.0"]
    assert main(args) == 0
    assert "without an API key" in capsys.readouterr().err


def test_bad_limits_are_a_clear_error(served, model_dir, capsys) -> None:
    args = ["serve", "--model", model_dir, "--device", "cpu", "--max-concurrent", "0"]
    assert main([*args, "--evaluator", "avoid:e", "--embedder", "hidden", "--quiet"]) == 2
    assert "max_concurrent must be at least 1" in capsys.readouterr().err


def test_serve_run_builder_takes_the_cli_options_and_refuses_others(monkeypatch) -> None:
    pytest.importorskip("ray.serve")
    from rain_integrations.server.ray_serve import app_builder
    from rain_search.errors import ConfigError

    monkeypatch.setenv("RAIN_API_KEY", "k")
    app = app_builder({"preset": "fast", "replicas": "2", "max_tokens": "64"})
    assert type(app).__name__ == "Application"
    with pytest.raises(ConfigError, match="unknown option"):
        app_builder({"replica": "2"})
    with pytest.raises(ConfigError, match="bad option value"):
        app_builder({"replicas": "two"})
    with pytest.raises(ConfigError, match="max_concurrent must be at least 1"):
        app_builder({"max_concurrent": "0"})


def test_serve_hands_uvicorn_the_protocol_that_caps_request_heads(served, model_dir) -> None:
    from rain_integrations.server.protocol import GuardedProtocol

    args = ["serve", "--model", model_dir, "--device", "cpu", "--preset", "fast"]
    assert main([*args, "--evaluator", "avoid:e", "--embedder", "hidden", "--quiet"]) == 0
    assert issubclass(served["http"], GuardedProtocol)
    assert served["http"].max_header_bytes == served["h11_max_incomplete_event_size"] == 32768
    assert served["http"].header_timeout == 10.0
