"""The audit log: every event is saved, logged, pushed to open pages, and alerted when asked.

``event_record`` is the one way to record something a trader may want to read later. The row is
written in the caller's transaction; the live push and the Telegram alert happen after commit
(nothing is announced that was rolled back). Push and alert failures never reach the caller.
From async code use ``aevent_record`` (same arguments).
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.db import transaction
from django.template.loader import render_to_string

from . import notify
from .live import live_push
from .logging import log_context
from .models import LEVELS, Event

log = logging.getLogger("tradebaas.events")
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def event_record(
    *,
    kind: str,
    message: str,
    level: str = "info",
    context: dict | None = None,
    run_id: int | None = None,
    bracket_id: str | None = None,
    alert: bool = False,
) -> Event:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    event = Event.objects.create(
        kind=kind,
        level=level,
        message=message,
        context=_jsonable(context or {}),
        run_id=run_id,
        bracket_id=bracket_id or "",
    )
    with log_context(run_id=run_id, bracket_id=bracket_id):
        log.log(
            _LOG_LEVELS[level],
            "%s: %s",
            kind,
            message,
            extra={"event_id": event.pk, "event_kind": kind, "event_context": event.context},
        )
    transaction.on_commit(lambda: _announce(event, alert=alert))
    return event


aevent_record = sync_to_async(event_record, thread_sensitive=True)


def _announce(event: Event, *, alert: bool) -> None:
    try:
        live_push(render_event_row(event))
    except Exception:
        log.warning("event %s not pushed", event.pk, exc_info=True)
    if alert:
        try:
            notify.alert(
                alert_text(event), kind=event.kind, critical=event.level in ("error", "critical")
            )
        except Exception:
            log.warning("event %s not alerted", event.pk, exc_info=True)


def render_event_row(event: Event) -> str:
    """The fragment that prepends the event to ``#events-list`` on every open page."""
    return render_to_string("partials/event_row.html", {"event": event, "oob": True})


def alert_text(event: Event) -> str:
    where = []
    if event.run_id:
        where.append(f"run {event.run_id}")
    if event.bracket_id:
        where.append(f"bracket {event.bracket_id}")
    suffix = f" ({', '.join(where)})" if where else ""
    text = f"[{event.level.upper()}] {event.message}{suffix}"
    if event.kind == "run_error":
        text += (
            "\nAction: manual restart required (dashboard, or /restart when remote start is on)."
        )
    return text


def _jsonable(value):
    """Context goes into a JSON column: Decimals, datetimes and the like become strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
