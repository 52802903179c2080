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
