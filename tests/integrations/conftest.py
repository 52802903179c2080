"""Fixtures shared by the server's test modules."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rain_integrations.server import ServerLimits, build_app
from tests.integrations.test_server import AUTH, KEY, MODEL


@pytest.fixture
def client(generator):
    """The app on the tiny Llama behind an API key, answers capped at 64 tokens."""
    app = build_app(generator, api_key=KEY, model_name=MODEL, limits=ServerLimits(max_tokens=64))
    with TestClient(app) as test_client:
        test_client.headers.update(AUTH)
        yield test_client
