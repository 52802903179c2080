"""Fixtures shared by the server's test modules."""

from __future__ import annotations

import gc

import pytest
from fastapi.testclient import TestClient

from rain_integrations.server import ServerLimits, build_app
from tests.integrations.test_server import AUTH, KEY, MODEL


@pytest.fixture(autouse=True)
def unfrozen_heap():
    """The server freezes the heap once its model is loaded (rain_search/heap.py); the
    test process must not keep what one test froze for every later test."""
    yield
    gc.unfreeze()


@pytest.fixture
def client(generator):
    """The app on the tiny Llama behind an API key, answers capped at 64 tokens."""
    app = build_app(generator, api_key=KEY, model_name=MODEL, limits=ServerLimits(max_tokens=64))
    with TestClient(app) as test_client:
        test_client.headers.update(AUTH)
        yield test_client
