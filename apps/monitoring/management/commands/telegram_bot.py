"""Answer Telegram commands until SIGTERM (systemd unit ``tradebaas-telegram``)."""

from __future__ import annotations

import logging
import signal
import threading

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from apps.monitoring import telegram_bot
from apps.monitoring.notify import TelegramError

log = logging.getLogger("apps.monitoring.telegram_bot")


class Command(BaseCommand):
    help = "Poll the Telegram Bot API for commands from the configured chat and answer them."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--poll-timeout", type=float, default=25.0)
        parser.add_argument("--idle", type=float, default=10.0, help="wait when Telegram is off")
        parser.add_argument("--once", action="store_true", help="one poll, then exit")

    def handle(self, *args, poll_timeout: float, idle: float, once: bool, **options) -> None:
        stop = threading.Event()
        previous = {
            signum: signal.signal(signum, lambda *_: stop.set())
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        failures = 0
        log.info("telegram bot started")
        while not stop.is_set():
            close_old_connections()
            try:
                handled = telegram_bot.poll_once(timeout=poll_timeout)
                failures = 0
                if handled == 0 and not _ready():
                    stop.wait(idle)
            except TelegramError as exc:
                failures += 1
                delay = min(60.0, 2.0**failures)
                log.warning("telegram poll failed: %s; retrying in %.0f s", exc, delay)
                stop.wait(delay)
            except Exception:
                failures += 1
                log.exception("telegram bot pass failed")
                stop.wait(min(60.0, 2.0**failures))
            if once:
                break
        close_old_connections()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        log.info("telegram bot stopped")


def _ready() -> bool:
    from apps.monitoring.models import NotificationSettings

    return NotificationSettings.load().telegram_ready
