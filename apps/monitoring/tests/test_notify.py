"""Telegram alerts: sent through the Bot API, retried, bounded, never blocking, token never shown."""

from __future__ import annotations

import logging
import time

import pytest

from apps.monitoring import notify
from apps.monitoring.logging import JsonFormatter, mask_secrets
from apps.monitoring.models import NotificationSettings
from apps.monitoring.testing import TEST_BOT_TOKEN, configure_telegram

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(notify, "BACKOFF_BASE", 0.01)


def test_alert_reaches_the_configured_chat(telegram):
    configure_telegram(telegram, chat_id="4242")
    notify.alert("Run 7 stopped: manual restart required", kind="run_error", critical=True)
    sent = telegram.wait_for_sent(1)
    assert sent[0]["chat_id"] == "4242"
    assert "manual restart required" in sent[0]["text"]
    assert sent[0]["text"].startswith("🚨")


def test_alert_is_retried_through_an_outage(telegram):
    configure_telegram(telegram)
    telegram.fail_next(2, status=502)
    notify.alert("bracket closed +12.5 USD", kind="bracket_closed")
    assert telegram.wait_for_sent(1)[0]["text"] == "bracket closed +12.5 USD"
    assert telegram.calls.count("sendMessage") == 3


def test_flood_control_retry_after_is_honoured(telegram):
    configure_telegram(telegram)
    telegram.retry_after_next = 1
    notify.alert("hello", kind="daily_summary")
    assert telegram.wait_for_sent(1)[0]["text"] == "hello"


def test_alert_never_blocks_and_a_full_queue_drops_the_oldest(telegram, monkeypatch):
    configure_telegram(telegram)
    monkeypatch.setattr(notify, "_dispatcher", notify._Dispatcher(size=3))
    telegram.gate.clear()  # Telegram hangs
    started = time.perf_counter()
    notify.alert("first", kind="test")
    # wait until the drain thread is stuck on the first request
    deadline = time.monotonic() + 5
    while not telegram.calls and not notify._dispatcher.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    for index in range(10):
        notify.alert(f"later {index}", kind="test")
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"alert() blocked for {elapsed:.3f} s while Telegram hung"
    assert notify.dropped_count() == 7
    telegram.gate.set()
    assert notify.flush(10)
    assert telegram.texts() == ["first", "later 7", "later 8", "later 9"]


def test_unreachable_telegram_gives_up_quietly(settings, monkeypatch, caplog):
    settings.TELEGRAM_API_BASE = "http://127.0.0.1:9"  # nothing listens (discard port)
    config = NotificationSettings.load()
    config.telegram_enabled = True
    config.telegram_bot_token = TEST_BOT_TOKEN
    config.telegram_chat_id = "1"
    config.save()
    with caplog.at_level(logging.INFO, logger="apps.monitoring.notify"):
        notify.alert("lost", kind="broker_disconnect")
        assert notify.flush(10)
    assert "not sent after 4 attempt(s)" in caplog.text
    assert TEST_BOT_TOKEN not in caplog.text
    assert TEST_BOT_TOKEN.split(":")[1] not in caplog.text


def test_disabled_kinds_and_disabled_telegram_send_nothing(telegram):
    configure_telegram(telegram, alert_brackets=False)
    notify.alert("opened", kind="bracket_opened")
    notify.alert("error!", kind="run_error")
    assert notify.flush(10)
    assert telegram.texts() == ["error!"]
    configure_telegram(telegram, telegram_enabled=False)
    notify.alert("error again", kind="run_error")
    assert notify.flush(10)
    assert telegram.texts() == ["error!"]


def test_send_test_message_reports_success_and_errors_without_the_token(telegram):
    ok, message = notify.send_test_message()
    assert not ok and "bot token" in message
    configure_telegram(telegram)
    ok, message = notify.send_test_message()
    assert ok, message
    assert telegram.texts() == ["Tradebaas: test message ✅"]
    config = NotificationSettings.load()
    config.telegram_bot_token = "999:wrong-token"
    config.save()
    ok, message = notify.send_test_message()
    assert not ok
    assert "401" in message and "Unauthorized" in message
    assert "wrong-token" not in message


def test_bot_token_is_stored_encrypted(telegram):
    configure_telegram(telegram)
    row = NotificationSettings.objects.values("telegram_bot_token_encrypted").get()
    assert TEST_BOT_TOKEN not in row["telegram_bot_token_encrypted"]
    assert NotificationSettings.load().telegram_bot_token == TEST_BOT_TOKEN


def test_bot_tokens_are_masked_in_log_lines():
    url = f"https://api.telegram.org/bot{TEST_BOT_TOKEN}/sendMessage"
    assert TEST_BOT_TOKEN not in mask_secrets(f"POST {url} failed")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling %s", (url,), None)
    assert "bot***" in JsonFormatter().format(record)
    assert TEST_BOT_TOKEN.split(":")[1] not in JsonFormatter().format(record)


def test_key_rotation_re_encrypts_the_bot_token(telegram, settings):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    configure_telegram(telegram)
    old_cipher = NotificationSettings.load().telegram_bot_token_encrypted
    new_key = Fernet.generate_key().decode()
    settings.CREDENTIALS_KEYS = [new_key, *settings.CREDENTIALS_KEYS]
    call_command("rotate_notification_key")
    rotated = NotificationSettings.load()
    assert rotated.telegram_bot_token_encrypted != old_cipher
    settings.CREDENTIALS_KEYS = [new_key]  # the old key dropped: still readable
    assert NotificationSettings.load().telegram_bot_token == TEST_BOT_TOKEN
