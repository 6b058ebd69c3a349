"""Structured logs: one JSON object per line, with the run, bracket and account where they apply.

Context is bound with ``log_context(run_id=..., bracket_id=...)`` (a contextvar, so asyncio tasks
and threads keep their own) or passed as ``extra=``. Anything that looks like a secret is masked.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("log_context", default={})  # noqa: B039
CONTEXT_KEYS = (
    "run_id",
    "bracket_id",
    "account_id",
    "broker",
    "instrument",
    "state",
    "order_id",
    "event_id",
    "event_kind",
    "event_context",
)
_SECRET_PATTERNS = [
    re.compile(
        r"(?i)(client_secret|api_secret|secret|password|access_token|refresh_token|token)"
        r"([\"']?\s*[:=]\s*[\"']?)([^\s\"',}&]+)"
    ),
]


# Telegram bot tokens travel inside URLs (https://api.telegram.org/bot<id>:<secret>/sendMessage).
_BOT_TOKEN = re.compile(r"\bbot\d+:[A-Za-z0-9_-]+")


def mask_secrets(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _BOT_TOKEN.sub("bot***", text)


@contextlib.contextmanager
def log_context(**values) -> Iterator[None]:
    token = _context.set({**_context.get(), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_secrets(record.getMessage()),
            "process": record.processName,
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = mask_secrets(self.formatException(record.exc_info))
        # Context values may carry secrets too: mask the whole line, not only the message.
        return mask_secrets(json.dumps(payload, default=str))
