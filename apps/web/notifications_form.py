"""The Notifications tab: Telegram bot token (stored encrypted, shown masked), chat id, which
alerts to send, remote start, and a test message."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.monitoring import notify
from apps.monitoring.models import NotificationSettings

ALERT_FLAGS = (
    ("alert_run_errors", "Run errors (manual restart required)"),
    ("alert_broker_disconnects", "Broker disconnects"),
    ("alert_brackets", "Brackets opened and closed"),
    ("alert_orphans", "Rollback failures and orphans cancelled"),
    ("alert_protections", "Protections tripped"),
    ("alert_daily_summary", "Daily summary"),
)
TOKEN_RE = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")
CHAT_RE = re.compile(r"^-?\d{1,20}$|^@[A-Za-z0-9_]{4,}$")


def _masked(token: str) -> str:
    return f"…{token[-4:]}" if token else ""


def save_notification_settings(settings: NotificationSettings, data) -> dict[str, str]:
    """Validate and save; returns field errors (nothing saved when there are any)."""
    errors: dict[str, str] = {}
    token = data.get("bot_token", "").strip()
    chat_id = data.get("chat_id", "").strip()
    enabled = data.get("telegram_enabled") == "1"
    if token and not TOKEN_RE.match(token):
        errors["bot_token"] = "This does not look like a bot token (123456:ABC…)."
    if chat_id and not CHAT_RE.match(chat_id):
        errors["chat_id"] = "A chat id is a number (groups are negative) or @channelname."
    if enabled and not (token or settings.telegram_bot_token_encrypted):
        errors["bot_token"] = "Enter the bot token to turn Telegram alerts on."
    if enabled and not chat_id:
        errors["chat_id"] = "Enter the chat id to turn Telegram alerts on."
    if errors:
        return errors
    if token:
        settings.telegram_bot_token = token
    settings.telegram_chat_id = chat_id
    settings.telegram_enabled = enabled
    for name, _label in ALERT_FLAGS:
        setattr(settings, name, data.get(name) == "1")
    settings.remote_start_enabled = data.get("remote_start_enabled") == "1"
    settings.save()
    return {}


def tab(request: HttpRequest) -> HttpResponse:
    settings = NotificationSettings.load()
    errors: dict[str, str] = {}
    result = None
    if request.method == "POST":
        if request.POST.get("action") == "test":
            ok, message = notify.send_test_message()
            result = {"ok": ok, "message": message}
        else:
            errors = save_notification_settings(settings, request.POST)
            if not errors:
                result = {"ok": True, "message": "Saved."}
    posted = request.method == "POST" and request.POST.get("action") != "test"
    data = request.POST if posted else None
    form = {
        "telegram_enabled": (data.get("telegram_enabled") == "1")
        if data
        else settings.telegram_enabled,
        "chat_id": data.get("chat_id", "") if data else settings.telegram_chat_id,
        "remote_start_enabled": (data.get("remote_start_enabled") == "1")
        if data
        else settings.remote_start_enabled,
    }
    flags = [
        (name, label, (data.get(name) == "1") if data else getattr(settings, name))
        for name, label in ALERT_FLAGS
    ]
    context = {
        "form": form,
        "form_errors": errors,
        "alert_flags": flags,
        "masked_token": _masked(settings.telegram_bot_token),
        "result": result,
    }
    return render(request, "web/partials/settings_notifications.html", context)
