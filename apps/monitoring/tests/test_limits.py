"""WebSocket connection limits, the CORS whitelist from the environment, and Sentry on/off."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from apps.monitoring.consumers import CLOSE_RATE_LIMITED
from apps.monitoring.ws_limits import parse_rate
from tradebaas.asgi import application
from tradebaas.testing import BASE_DIR, child_env

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


async def _socket(client, user, address="10.0.0.1"):
    await database_sync_to_async(client.force_login)(user)
    name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{name}={client.cookies[name].value}".encode()
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    communicator.scope["client"] = (address, 5555)
    return communicator


def test_rate_parsing():
    assert parse_rate("120/min") == (120, 60)
    assert parse_rate("5/s") == (5, 1)
    with pytest.raises(ValueError, match="WS_CONNECT_RATE is malformed"):
        parse_rate("lots")


@pytest.mark.django_db(transaction=True)
async def test_connections_over_the_rate_are_refused(user, client, settings):
    settings.WS_CONNECT_RATE = "3/min"
    results = []
    for _ in range(4):
        communicator = await _socket(client, user)
        connected, code = await communicator.connect()
        results.append((connected, code))
        await communicator.disconnect()  # refused ones too: ends the consumer's application task
    assert [r[0] for r in results] == [True, True, True, False]
    assert results[-1][1] == CLOSE_RATE_LIMITED


@pytest.mark.django_db(transaction=True)
async def test_open_sockets_per_user_are_capped(user, client, settings):
    settings.WS_MAX_SOCKETS_PER_USER = 2
    first, second, third = [await _socket(client, user, f"10.0.1.{n}") for n in range(3)]
    assert (await first.connect())[0]
    assert (await second.connect())[0]
    connected, code = await third.connect()
    assert not connected and code == CLOSE_RATE_LIMITED
    await third.disconnect()
    await first.disconnect()
    again = await _socket(client, user, "10.0.1.9")
    assert (await again.connect())[0]  # a closed socket frees its place
    await second.disconnect()
    await again.disconnect()


@pytest.mark.django_db
def test_cors_allows_only_whitelisted_origins_on_the_api(client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://dash.example.com"]
    preflight = {
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "GET",
        "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization",
    }
    ok = client.options("/api/v2/strategies", HTTP_ORIGIN="https://dash.example.com", **preflight)
    assert ok.headers.get("Access-Control-Allow-Origin") == "https://dash.example.com"
    evil = client.options("/api/v2/strategies", HTTP_ORIGIN="https://evil.example", **preflight)
    assert "Access-Control-Allow-Origin" not in evil.headers


@pytest.mark.django_db
def test_cors_whitelist_comes_from_the_environment():
    code = "import django; django.setup(); from django.conf import settings; print(settings.CORS_ALLOWED_ORIGINS)"
    env = child_env(CORS_ALLOWED_ORIGINS="https://a.example,https://b.example:8443")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        out.stdout.strip().splitlines()[-1] == "['https://a.example', 'https://b.example:8443']"
    ), out.stderr


SENTRY_PROBE = """
import django, sentry_sdk
django.setup()
client = sentry_sdk.get_client()
names = sorted(getattr(client, "integrations", {}).keys())
print("ACTIVE", client.is_active(), ",".join(names))
if client.is_active():
    sentry_sdk.capture_message("probe from the test")
    sentry_sdk.flush(5)
"""


@pytest.mark.django_db
def test_sentry_is_off_without_a_dsn():
    env = child_env()
    env.pop("SENTRY_DSN", None)
    out = subprocess.run(
        [sys.executable, "-c", SENTRY_PROBE],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ACTIVE False" in out.stdout, out.stderr


@pytest.mark.django_db
def test_sentry_with_a_dsn_sends_events_with_the_django_integration():
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args):
            return

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = self.headers.get("Content-Encoding") or ""
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "br":
                import brotli

                body = brotli.decompress(body)
            received.append(self.path.encode() + b" " + body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"id": "0" * 32}).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/42"
        out = subprocess.run(
            [sys.executable, "-c", SENTRY_PROBE],
            env=child_env(SENTRY_DSN=dsn),
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
    line = next(x for x in out.stdout.splitlines() if x.startswith("ACTIVE"))
    assert line.startswith("ACTIVE True"), out.stderr
    for integration in ("django", "celery", "redis", "logging"):
        assert integration in line.split()[2].split(",")
    assert any(b"/api/42/envelope/" in r and b"probe from the test" in r for r in received)
