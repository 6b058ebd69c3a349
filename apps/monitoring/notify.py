"""Telegram alerts that never hold up trading.

``alert()`` only appends to a bounded in-process queue (the oldest alert is dropped, and counted,
when it is full) and returns at once; a daemon thread drains the queue, reads the settings, and
calls the Bot API ``sendMessage`` at ``settings.TELEGRAM_API_BASE`` with retries and back-off.
It works the same way from sync code, from the runner's asyncio loop and from Celery workers
(the thread is started lazily in each process, also after a fork). A Telegram outage costs
alerts, never a trade. The bot token is part of the URL; it is masked in every log and error.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from django.conf import settings
from prometheus_client import Counter

log = logging.getLogger(__name__)

QUEUE_SIZE = 200
ATTEMPTS = 4
CRITICAL_ATTEMPTS = 8
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
HTTP_TIMEOUT = 10.0
MAX_TEXT = 4000  # Telegram's limit is 4096 characters
_TOKEN_IN_URL = re.compile(r"/bot[^/\s]+")

ALERTS = Counter("tradebaas_alerts_total", "Telegram alerts by outcome", ["outcome"])


class TelegramError(Exception):
    """The Bot API refused or could not be reached; the message never contains the token."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


def mask_token(text: str, token: str = "") -> str:
    if token:
        text = text.replace(token, "***")
    return _TOKEN_IN_URL.sub("/bot***", text)


def bot_call(token: str, method: str, payload: dict, *, timeout: float = HTTP_TIMEOUT) -> dict:
    """One Bot API call (JSON in, JSON out). Raises TelegramError with the token masked."""
    url = f"{settings.TELEGRAM_API_BASE.rstrip('/')}/bot{token}/{method}"
    if not url.startswith(("http://", "https://")):
        raise TelegramError("TELEGRAM_API_BASE must be an http(s) URL", permanent=True)
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        retry_after = (body.get("parameters") or {}).get("retry_after")
        description = mask_token(str(body.get("description") or exc.reason), token)
        raise TelegramError(
            f"Telegram {method} answered {exc.code}: {description}",
            retry_after=float(retry_after) if retry_after else None,
            permanent=exc.code in (400, 401, 403, 404),
        ) from None
    except (OSError, ValueError) as exc:
        raise TelegramError(f"Telegram {method} failed: {mask_token(str(exc), token)}") from None
    if not body.get("ok"):
        raise TelegramError(
            f"Telegram {method} refused: {mask_token(str(body.get('description')), token)}"
        )
    return body.get("result") or {}


@dataclass
class _Alert:
    text: str
    kind: str
    critical: bool
    created: float = field(default_factory=time.time)


class _Dispatcher:
    """The bounded queue and its drain thread (one per process)."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.queue: collections.deque[_Alert] = collections.deque()
        self.size = size
        self.cond = threading.Condition()
        self.dropped = 0
        self.busy = False
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()

    def put(self, item: _Alert) -> None:
        with self.cond:
            if len(self.queue) >= self.size:
                self.queue.popleft()
                self.dropped += 1
                ALERTS.labels("dropped").inc()
            self.queue.append(item)
            self._ensure_thread()
            self.cond.notify()

    def _ensure_thread(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._run, name="tradebaas-notify", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.busy = False
                    self.cond.notify_all()
                    self.cond.wait()
                item = self.queue.popleft()
                self.busy = True
            try:
                _deliver(item)
            except Exception:  # the thread must survive anything
                log.exception("alert delivery crashed")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert was sent or given up (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.queue or self.busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True


_dispatcher = _Dispatcher()


def _reset_after_fork() -> None:
    global _dispatcher
    _dispatcher = _Dispatcher()


os.register_at_fork(after_in_child=_reset_after_fork)


def alert(text: str, *, kind: str, critical: bool = False) -> None:
    """Queue a Telegram alert and return at once. Never raises."""
    try:
        _dispatcher.put(_Alert(text=str(text), kind=kind, critical=critical))
    except Exception:
        log.warning("could not queue alert", exc_info=True)


def flush(timeout: float = 10.0) -> bool:
    return _dispatcher.flush(timeout)


def dropped_count() -> int:
    return _dispatcher.dropped


def _load_config():
    """The settings row, read from the drain thread (which then closes its DB connection)."""
    from django.db import connections

    from .models import NotificationSettings

    try:
        return NotificationSettings.load()
    finally:
        connections.close_all()


def _format(item: _Alert) -> str:
    prefix = "🚨 " if item.critical else ""
    text = f"{prefix}{item.text}"
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _deliver(item: _Alert) -> None:
    try:
        config = _load_config()
    except Exception:
        log.warning("alert not sent: settings unreadable", exc_info=True)
        ALERTS.labels("failed").inc()
        return
    if not config.telegram_ready or not config.kind_enabled(item.kind):
        ALERTS.labels("disabled").inc()
        return
    token, chat_id = config.telegram_bot_token, config.telegram_chat_id
    attempts = CRITICAL_ATTEMPTS if item.critical else ATTEMPTS
    payload = {"chat_id": chat_id, "text": _format(item), "disable_web_page_preview": True}
    for attempt in range(1, attempts + 1):
        try:
            bot_call(token, "sendMessage", payload)
            ALERTS.labels("sent").inc()
            return
        except TelegramError as exc:
            if exc.permanent or attempt == attempts:
                log.warning("alert %s not sent after %d attempt(s): %s", item.kind, attempt, exc)
                ALERTS.labels("failed").inc()
                return
            delay = exc.retry_after or min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
            log.info("alert %s: %s; retrying in %.1f s", item.kind, exc, delay)
            time.sleep(delay)


def send_test_message(text: str = "Tradebaas: test message ✅") -> tuple[bool, str]:
    """Send one message right now (the settings dialog's "Send test" button).

    Returns ``(ok, human readable result)``; the error never contains the token.
    """
    from .models import NotificationSettings

    config = NotificationSettings.load()
    if not config.telegram_bot_token_encrypted or not config.telegram_chat_id:
        return False, "Set the bot token and the chat id first."
    token = config.telegram_bot_token
    try:
        bot_call(token, "sendMessage", {"chat_id": config.telegram_chat_id, "text": text})
    except TelegramError as exc:
        return False, str(exc)
    return True, "Test message sent."
