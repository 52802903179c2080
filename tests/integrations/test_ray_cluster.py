"""Starting Ray: usage statistics stay off unless the user opted in (no cluster here)."""

from __future__ import annotations

import os
import types

import pytest

from rain_integrations import ray_cluster


@pytest.fixture
def fake_ray(monkeypatch):
    ray = types.SimpleNamespace(is_initialized=lambda: True)
    monkeypatch.setattr(ray_cluster, "require", lambda *args: ray)
    return ray


@pytest.mark.parametrize("address", [None, "auto"])
def test_ray_usage_stats_are_off_unless_opted_in(fake_ray, monkeypatch, address) -> None:
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    ray_cluster.start_ray(address, loopback=True, purpose="test")
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user opted in
    ray_cluster.start_ray(address, loopback=True, purpose="test")
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--ray", "--replicas", "0"], "--replicas must be at least 1, got 0"),
        (
            ["serve", "--ray", "--gpus-per-replica", "-1"],
            "--gpus-per-replica and --cpus-per-replica cannot be negative",
        ),
        (["batch", "IN", "OUT", "--ray", "--actors", "0"], "--actors must be at least 1, got 0"),
        (
            ["batch", "IN", "OUT", "--ray", "--cpus-per-actor", "-0.5"],
            "--gpus-per-actor and --cpus-per-actor cannot be negative",
        ),
    ],
)
def test_one_replica_record_names_each_commands_own_options(
    argv, message, tmp_path, monkeypatch, capsys
) -> None:
    """Serve replicas and batch actors are one record; its errors name the right flags,
    before Ray starts or a model loads."""
    from rain_search.cli import GeneratorSpec, main

    def no_loading(self):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(GeneratorSpec, "__call__", no_loading)
    monkeypatch.setattr(ray_cluster, "require", lambda *args: pytest.fail("Ray was started"))
    (tmp_path / "in.jsonl").write_text('{"prompt": "Hi"}\n', encoding="utf-8")
    paths = {"IN": str(tmp_path / "in.jsonl"), "OUT": str(tmp_path / "out")}
    assert main([paths.get(arg, arg) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err == f"rain: error: {message}\n"
