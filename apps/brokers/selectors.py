"""Reads about broker accounts and whether trading activity forbids switching broker."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet

from apps.brokers.models import BrokerAccount

log = logging.getLogger(__name__)


def broker_accounts() -> QuerySet[BrokerAccount]:
    return BrokerAccount.objects.all()


def active_account() -> BrokerAccount | None:
    """The one selected account (whatever its connection state), or None: trade on paper."""
    return BrokerAccount.objects.filter(is_active=True).first()


def _optional(module: str, name: str) -> Callable[[], Any] | None:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


# States of a StrategyRun in which it holds, or is about to hold, a position.
_POSITION_STATES = ("ENTERING_POSITION", "POSITION_OPEN", "CLOSING")


def trading_busy_reason() -> str | None:
    """Why the broker may not be switched or disconnected now, or None when it may.

    Asks ``apps.strategies.selectors.active_run()`` and ``apps.orders.selectors.
    open_position_exists()`` (a live bracket of ours); a run in a position state counts as an
    open position too. If either function is missing (an older tree), the StrategyRun table
    answers alone.
    """
    active_run = _optional("apps.strategies.selectors", "active_run")
    open_position_exists = _optional("apps.orders.selectors", "open_position_exists")
    run: Any = None
    if active_run is not None:
        run = active_run()
    else:
        from apps.strategies.models import StrategyRun

        run = StrategyRun.objects.filter(is_active=True).first()
    position_open = run is not None and getattr(run, "state", None) in _POSITION_STATES
    if open_position_exists is not None:
        position_open = position_open or bool(open_position_exists())
    if position_open:
        return "A position is open: close it before switching or disconnecting the broker."
    if run is not None:
        name = getattr(run, "strategy", "a strategy")
        return f"A strategy run is active ({name}): stop it before switching or disconnecting the broker."
    return None
