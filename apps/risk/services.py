"""Writes of the risk settings, and sizing a trade with the settings read fresh.

``risk_settings_get`` creates the singleton row with its defaults on first use (so it lives
here, not among the selectors). ``risk_size_trade`` is what the runner calls for every trade: it
reads the settings from the database (never a cached copy), logs
``Using risk settings: mode=percent value=5``, sizes the trade and returns the snapshot of the
settings it used, which the runner stores on the trade's record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction

from apps.brokers.base import InstrumentSpec, Side
from apps.risk.models import SINGLETON_ID, RiskSettings, plain
from apps.risk.selectors import (
    risk_settings_current,
    risk_settings_for_trade,
    risk_settings_snapshot,
    risk_settings_snapshot_of,
)
from apps.risk.sizing import SizingResult, size_position

log = logging.getLogger("apps.risk")

EDITABLE_FIELDS = (
    "mode",
    "value",
    "leverage_cap",
    "max_open_trades",
    "include_fees",
    "cooldown_minutes",
    "daily_loss_limit_pct",
    "max_drawdown_pct",
)


def risk_settings_get() -> RiskSettings:
    """The settings row (created with the defaults when there is none yet)."""
    settings, _ = RiskSettings.objects.get_or_create(pk=SINGLETON_ID)
    return settings


@transaction.atomic
def risk_settings_update(**changes: Any) -> RiskSettings:
    """Change some settings; raises ``django.core.exceptions.ValidationError`` (per field) on
    bad values, leaving the stored row untouched. Records a ``risk.settings_changed`` event."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"not risk settings: {', '.join(sorted(unknown))}")
    risk_settings_get()
    settings = RiskSettings.objects.select_for_update().get(pk=SINGLETON_ID)
    before = risk_settings_snapshot_of(settings)
    for name, value in changes.items():
        setattr(settings, name, value)
    # clean() and the field validators cover every check constraint, with per-field messages.
    settings.full_clean(validate_constraints=False)
    settings.save()
    after = risk_settings_snapshot_of(settings)
    changed = {
        k: {"from": before[k], "to": after[k]} for k in EDITABLE_FIELDS if before[k] != after[k]
    }
    if changed:
        from apps.monitoring.events import event_record

        event_record(
            kind="risk.settings_changed",
            message="Risk settings changed: "
            + ", ".join(f"{k} {v['from']} → {v['to']}" for k, v in changed.items()),
            context={"changed": changed},
        )
    return settings


@dataclass(frozen=True, slots=True)
class TradeSizing:
    result: SizingResult
    settings: dict[str, Any]  # risk_settings_snapshot() of the settings used


def risk_size_trade(
    *,
    spec: InstrumentSpec,
    side: Side,
    entry: Decimal,
    stop: Decimal,
    equity: Decimal,
    available_funds: Decimal | None = None,
    settings: RiskSettings | None = None,
) -> TradeSizing:
    """Size one trade with the settings as they are in the database now.

    ``settings``: the row the caller has just read for this trade (the runner reads it on the
    candle close itself and logs the sizing after the order went out); without it the row is
    read here and the sizing is logged at once.

    Raises ``apps.risk.sizing.SizingRefused`` when the sizer refuses the trade.
    """
    quiet = settings is not None
    settings = settings or risk_settings_current()
    result = size_position(
        spec=spec,
        side=side,
        entry=entry,
        stop=stop,
        equity=equity,
        available_funds=available_funds,
        mode=settings.mode,
        value=settings.value,
        leverage_cap=settings.leverage_cap,
        include_fees=settings.include_fees,
    )
    sized = TradeSizing(result=result, settings=risk_settings_snapshot_of(settings))
    if not quiet:
        sizing_log(spec.name, side, sized)
    return sized


def sizing_log(instrument: str, side: Side, sized: TradeSizing) -> None:
    """The two log lines of a sizing: the settings used, and the size they gave."""
    result = sized.result
    log.info(
        "Using risk settings: mode=%s value=%s",
        sized.settings["mode"],
        sized.settings["value"],
        extra={"risk_settings": sized.settings},
    )
    log.info(
        "Sized %s %s: amount=%s risk=%s %s (%s USD) leverage=%s",
        side.value,
        instrument,
        plain(result.amount),
        plain(result.risk),
        result.risk_currency,
        plain(result.risk_usd),
        plain(result.leverage),
    )


# The runner and the strategies app read these through the services module too.
__all__ = [
    "EDITABLE_FIELDS",
    "TradeSizing",
    "risk_settings_for_trade",
    "risk_settings_get",
    "risk_settings_snapshot",
    "risk_settings_update",
    "risk_size_trade",
    "sizing_log",
]
