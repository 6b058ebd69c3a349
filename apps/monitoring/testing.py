"""A local HTTP server that speaks the Telegram Bot API, for tests (and the demo) of alerts/commands.

    with fake_telegram() as tg:
        settings.TELEGRAM_API_BASE = tg.base_url
        ...
        tg.wait_for_sent(1)
        assert "ERROR" in tg.sent[0]["text"]
        tg.push_update("/status", chat_id=42)   # served by getUpdates

``tg.fail_next(n, status=502)`` answers the next n calls with an error (an outage);
``tg.retry_after`` simulates 429 flood control. Only the token passed in is accepted (401 otherwise).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

import pytest

TEST_BOT_TOKEN = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz"


class FakeTelegram:
    def __init__(self, token: str = TEST_BOT_TOKEN) -> None:
        self.token = token
        self.sent: list[dict] = []
        self.calls: list[str] = []
        self.updates: list[dict] = []
        self.failures: list[int] = []
        self.retry_after_next = 0
        self.next_update_id = 1000
        # Cleared: every request waits (a hung Telegram). Set again to let them through.
        self.gate = threading.Event()
        self.gate.set()
        self.cond = threading.Condition()
        self.server: ThreadingHTTPServer | None = None
        self.base_url = ""

    # -- controls -----------------------------------------------------------------------------
    def push_update(self, text: str, chat_id: int | str, *, username: str = "trader") -> dict:
        with self.cond:
            self.next_update_id += 1
            update = {
                "update_id": self.next_update_id,
                "message": {
                    "message_id": self.next_update_id,
                    "date": int(time.time()),
                    "chat": {"id": int(chat_id), "type": "private"},
                    "from": {"id": int(chat_id), "is_bot": False, "username": username},
                    "text": text,
                },
            }
            self.updates.append(update)
            self.cond.notify_all()
        return update

    def fail_next(self, count: int, status: int = 502) -> None:
        with self.cond:
            self.failures.extend([status] * count)

    def wait_for_sent(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.sent) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.sent)} of {count} messages sent: {self.sent}")
                self.cond.wait(remaining)
            return list(self.sent)

    def texts(self) -> list[str]:
        with self.cond:
            return [m["text"] for m in self.sent]

    # -- protocol -----------------------------------------------------------------------------
    def handle(self, method: str, token: str, params: dict) -> tuple[int, dict]:
        self.gate.wait(30)
        with self.cond:
            self.calls.append(method)
            if self.failures:
                status = self.failures.pop(0)
                return status, {"ok": False, "error_code": status, "description": "Bad Gateway"}
            if self.retry_after_next:
                self.retry_after_next -= 1
                return 429, {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 0.2},
                }
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if method == "sendMessage":
            if not params.get("chat_id") or not params.get("text"):
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request"}
            with self.cond:
                message = {
                    "message_id": len(self.sent) + 1,
                    "chat_id": str(params["chat_id"]),
                    "text": str(params["text"]),
                    "params": params,
                }
                self.sent.append(message)
                self.cond.notify_all()
            return 200, {"ok": True, "result": {"message_id": message["message_id"]}}
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            wait = min(float(params.get("timeout") or 0), 2.0)
            deadline = time.monotonic() + wait
            with self.cond:
                while True:
                    pending = [u for u in self.updates if u["update_id"] >= offset]
                    remaining = deadline - time.monotonic()
                    if pending or remaining <= 0:
                        return 200, {"ok": True, "result": pending}
                    self.cond.wait(remaining)
        if method == "getMe":
            return 200, {"ok": True, "result": {"id": 123456, "is_bot": True, "username": "tb"}}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    def start(self) -> FakeTelegram:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                return

            def _dispatch(self, params: dict) -> None:
                path = urlparse(self.path).path.strip("/")
                parts = path.split("/")
                if len(parts) != 2 or not parts[0].startswith("bot"):
                    status, body = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
                else:
                    status, body = fake.handle(parts[1], parts[0][3:], params)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._dispatch(dict(parse_qsl(urlparse(self.path).query)))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "json" in (self.headers.get("Content-Type") or ""):
                    params = json.loads(raw or b"{}")
                else:
                    params = dict(parse_qsl(raw.decode()))
                self._dispatch(params)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@contextlib.contextmanager
def fake_telegram(token: str = TEST_BOT_TOKEN) -> Iterator[FakeTelegram]:
    fake = FakeTelegram(token).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def telegram(settings) -> Iterator[FakeTelegram]:
    """pytest fixture: a running fake with ``settings.TELEGRAM_API_BASE`` pointing at it.

    Import it into a test module or conftest: ``from apps.monitoring.testing import telegram``.
    """
    from . import notify

    with fake_telegram() as fake:
        settings.TELEGRAM_API_BASE = fake.base_url
        yield fake
        notify.flush(10)


def configure_telegram(fake: FakeTelegram, *, chat_id: str = "4242", **flags):
    """Save a NotificationSettings row that sends to the fake (the base URL is set by the caller
    or by the ``telegram`` fixture)."""
    from .models import NotificationSettings

    config = NotificationSettings.load()
    config.telegram_enabled = True
    config.telegram_bot_token = fake.token
    config.telegram_chat_id = chat_id
    for name, value in flags.items():
        setattr(config, name, value)
    config.save()
    return config
