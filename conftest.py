"""Fixtures shared by every app's tests: users, logged-in clients, API tokens, artifacts, workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tradebaas.redis import redis_client, rkey

# The Deribit simulator's fixtures (deribit_sim, deribit_sim_threaded) for every app's tests.
pytest_plugins = ["apps.brokers.simulator.testing"]

ARTIFACTS = Path(os.environ.get("TRADEBAAS_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def password() -> str:
    return "correct-horse-battery-staple"


@pytest.fixture
def user(db, password):
    return get_user_model().objects.create_user(username="trader", password=password, is_staff=True)


@pytest.fixture
def auth_client(client, user):
    """Django test client with a logged-in trader (pages and session-authenticated API)."""
    client.force_login(user)
    return client


@pytest.fixture
def api_client(user) -> APIClient:
    """DRF client authenticated with the trader's API token."""
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anon_api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def fast_loop(settings):
    """The strategy loop's timings for tests: a short wait for candles, a quick position poll,
    a lock that outlives a slow test machine's pauses."""
    settings.RUNNER_CANDLE_WAIT_S = 0.01
    settings.RUNNER_POSITION_POLL_S = 0.05
    settings.RUNNER_LOCK_TTL_MS = 5000


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """A new channel layer object per test: channels_redis keeps asyncio locks bound to the event
    loop that first used them, and each async test has its own loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _clean_redis_keys():
    """Each test leaves none of our locks, heartbeats or cache entries behind.

    Queue keys stay: a module-scoped worker process would lose its bindings.
    """
    yield
    client = redis_client()
    for pattern in ("lock:*", "hb:*", "cache*", "state:*"):
        keys = list(client.scan_iter(match=rkey(pattern), count=500))
        if keys:
            client.delete(*keys)
