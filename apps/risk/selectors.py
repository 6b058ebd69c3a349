"""Reads of the risk settings: fresh for every trade, as a snapshot, as protection limits."""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.db import connection

from apps.risk.models import SINGLETON_ID, RiskSettings, plain
from apps.risk.protections import ProtectionLimits

log = logging.getLogger("apps.risk")


def risk_settings_current() -> RiskSettings:
    """The settings as stored now (the defaults, unsaved, when no row exists yet)."""
    return RiskSettings.objects.filter(pk=SINGLETON_ID).first() or RiskSettings()


def risk_settings_values() -> tuple | None:
    """Every column of the settings row as stored now, in one cheap query (no ORM): for the
    runner to tell, on each trade, whether the row it sized with is still the row (None: no
    row yet, the defaults apply)."""
    with connection.cursor() as cursor:
        cursor.execute(_values_sql(), [SINGLETON_ID])
        return cursor.fetchone()


@functools.cache
def _values_sql() -> str:
    quote = connection.ops.quote_name
    opts = RiskSettings._meta
    columns = ", ".join(quote(f.column) for f in opts.concrete_fields)
    table, pk = quote(opts.db_table), quote(opts.pk.column)
    return f"SELECT {columns} FROM {table} WHERE {pk} = %s"  # noqa: S608


def risk_settings_for_trade() -> RiskSettings:
    """The settings read from the database for one trade, logged as the runner uses them."""
    settings = risk_settings_current()
    log.info(
        "Using risk settings: mode=%s value=%s",
        settings.mode,
        plain(settings.value),
        extra={"risk_settings": risk_settings_snapshot_of(settings)},
    )
    return settings


def risk_settings_snapshot_of(settings: RiskSettings) -> dict[str, Any]:
    """JSON-able copy of the settings (decimals as plain strings)."""
    return {
        "mode": settings.mode,
        "value": plain(settings.value),
        "leverage_cap": plain(settings.leverage_cap),
        "max_open_trades": settings.max_open_trades,
        "include_fees": settings.include_fees,
        "cooldown_minutes": settings.cooldown_minutes,
        "daily_loss_limit_pct": plain(settings.daily_loss_limit_pct) or None,
        "max_drawdown_pct": plain(settings.max_drawdown_pct) or None,
    }


def risk_settings_snapshot() -> dict[str, Any]:
    """The current settings as the runner stores them on each trade's record."""
    return risk_settings_snapshot_of(risk_settings_current())


def protection_limits(settings: RiskSettings | None = None) -> ProtectionLimits:
    settings = settings or risk_settings_current()
    return ProtectionLimits(
        cooldown_minutes=settings.cooldown_minutes,
        daily_loss_limit_pct=settings.daily_loss_limit_pct,
        max_drawdown_pct=settings.max_drawdown_pct,
        max_open_trades=settings.max_open_trades,
    )
