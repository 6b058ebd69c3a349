"""Protections: whether the trade history says stop trading for now, and why.

Pure (no Django): the runner builds :class:`ClosedTrade` values from its trade records (one
settlement currency: the run's instrument's) and calls :func:`protection_tripped` before each
trade. A trip pauses the run with the trip's code and message; only the trader resumes it. For
the cooldown, ``until`` says when it would lapse — shown to the trader, the pause still holds.

- Cooldown after a stop-out: the last trade that closed at its stop closed less than
  ``cooldown_minutes`` ago.
- Daily loss limit: the trades closed since 00:00 UTC (by their own timestamps) lost (net of fees) at least
  ``daily_loss_limit_pct`` % of the equity the day started with (the current equity minus
  today's closed P&L, so deposits during the day do not count as profit).
- Max drawdown: the equity is at least ``max_drawdown_pct`` % below the peak equity.

A limit that is reached exactly trips (``>=``): "lose at most 3 %" stops at 3 %.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal


class ProtectionCode(enum.StrEnum):
    COOLDOWN_AFTER_STOP = "COOLDOWN_AFTER_STOP"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    MAX_DRAWDOWN = "MAX_DRAWDOWN"
    MAX_OPEN_TRADES = "MAX_OPEN_TRADES"


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    closed_at: datetime  # timezone-aware
    pnl: Decimal  # realized, net of fees, settlement currency
    stopped_out: bool  # closed by its stop-loss


@dataclass(frozen=True, slots=True)
class ProtectionLimits:
    """The protection part of the risk settings (None or 0: off)."""

    cooldown_minutes: int = 0
    daily_loss_limit_pct: Decimal | None = None
    max_drawdown_pct: Decimal | None = None
    max_open_trades: int = 1


@dataclass(frozen=True, slots=True)
class ProtectionTrip:
    code: ProtectionCode
    message: str
    until: datetime | None = None  # when a cooldown would lapse


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment


def _pct(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


def cooldown_trip(
    limits: ProtectionLimits, trades: Iterable[ClosedTrade], now: datetime
) -> ProtectionTrip | None:
    if limits.cooldown_minutes <= 0:
        return None
    stops = [_aware(t.closed_at, "closed_at") for t in trades if t.stopped_out]
    if not stops:
        return None
    last = max(stops)
    until = last + timedelta(minutes=limits.cooldown_minutes)
    if _aware(now, "now") >= until:
        return None
    left = until - now
    return ProtectionTrip(
        ProtectionCode.COOLDOWN_AFTER_STOP,
        f"Stopped out at {last.astimezone(UTC):%H:%M} UTC; cooldown of {limits.cooldown_minutes} min "
        f"runs until {until.astimezone(UTC):%H:%M} UTC ({math.ceil(left.total_seconds() / 60)} min left).",
        until,
    )


def daily_loss_trip(
    limits: ProtectionLimits, trades: Iterable[ClosedTrade], equity: Decimal, now: datetime
) -> ProtectionTrip | None:
    limit = limits.daily_loss_limit_pct
    if not limit:
        return None
    day_start = (
        _aware(now, "now").astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    # No upper bound: a trade closed "after now" is the exchange's (or the paper replay's) clock
    # running ahead of ours, and it is a loss all the same.
    today = sum(
        (t.pnl for t in trades if _aware(t.closed_at, "closed_at") >= day_start), Decimal(0)
    )
    if today >= 0:
        return None
    start_equity = equity - today
    if start_equity <= 0:
        return None
    lost_pct = -today * 100 / start_equity
    if lost_pct < limit:
        return None
    return ProtectionTrip(
        ProtectionCode.DAILY_LOSS_LIMIT,
        f"Today's closed trades lost {_pct(lost_pct)} % of the day's starting equity; "
        f"the daily loss limit is {_pct(limit)} %.",
    )


def drawdown_trip(
    limits: ProtectionLimits, equity: Decimal, peak_equity: Decimal
) -> ProtectionTrip | None:
    limit = limits.max_drawdown_pct
    if not limit or peak_equity <= 0:
        return None
    drawdown_pct = (peak_equity - equity) * 100 / peak_equity
    if drawdown_pct < limit:
        return None
    return ProtectionTrip(
        ProtectionCode.MAX_DRAWDOWN,
        f"Equity {equity:f} is {_pct(drawdown_pct)} % below its peak {peak_equity:f}; "
        f"the maximum drawdown is {_pct(limit)} %.",
    )


def open_trades_trip(limits: ProtectionLimits, open_trades: int) -> ProtectionTrip | None:
    """Not a pause: the runner skips a new entry while this many trades are open."""
    if open_trades < limits.max_open_trades:
        return None
    return ProtectionTrip(
        ProtectionCode.MAX_OPEN_TRADES,
        f"{open_trades} trade(s) open; the maximum is {limits.max_open_trades}.",
    )


def protection_tripped(
    *,
    limits: ProtectionLimits,
    trades: Iterable[ClosedTrade],
    equity: Decimal,
    peak_equity: Decimal,
    now: datetime,
) -> ProtectionTrip | None:
    """The first protection tripped (drawdown, daily loss, cooldown), or None to trade on.

    ``equity`` and ``peak_equity`` are in the settlement currency of ``trades``; the caller keeps
    the peak (the highest equity seen since the run, or the account, started).
    """
    history = list(trades)
    return (
        drawdown_trip(limits, equity, max(peak_equity, equity))
        or daily_loss_trip(limits, history, equity, now)
        or cooldown_trip(limits, history, now)
    )
