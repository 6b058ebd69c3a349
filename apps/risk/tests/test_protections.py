"""Protections trip on the history that should stop trading, and only on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.risk.protections import (
    ClosedTrade,
    ProtectionCode,
    ProtectionLimits,
    cooldown_trip,
    daily_loss_trip,
    drawdown_trip,
    open_trades_trip,
    protection_tripped,
)

D = Decimal
NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def trade(minutes_ago: float, pnl: str, stopped_out: bool = False) -> ClosedTrade:
    return ClosedTrade(
        closed_at=NOW - timedelta(minutes=minutes_ago), pnl=D(pnl), stopped_out=stopped_out
    )


# --- cooldown after a stop-out -------------------------------------------------------------


def test_cooldown_trips_within_the_minutes_after_a_stop_out():
    limits = ProtectionLimits(cooldown_minutes=30)
    trip = cooldown_trip(limits, [trade(10, "-0.01", stopped_out=True)], NOW)
    assert trip is not None and trip.code is ProtectionCode.COOLDOWN_AFTER_STOP
    assert trip.until == NOW + timedelta(minutes=20)
    assert "20 min left" in trip.message


def test_cooldown_lapses_exactly_at_its_end_and_ignores_winners():
    limits = ProtectionLimits(cooldown_minutes=30)
    assert cooldown_trip(limits, [trade(30, "-0.01", stopped_out=True)], NOW) is None
    assert cooldown_trip(limits, [trade(1, "0.02", stopped_out=False)], NOW) is None


def test_cooldown_counts_from_the_latest_stop_out():
    limits = ProtectionLimits(cooldown_minutes=30)
    history = [trade(100, "-0.01", True), trade(5, "-0.01", True), trade(50, "-0.01", True)]
    assert cooldown_trip(limits, history, NOW).until == NOW + timedelta(minutes=25)


def test_cooldown_off_by_default():
    assert cooldown_trip(ProtectionLimits(), [trade(1, "-1", True)], NOW) is None


# --- daily loss limit ----------------------------------------------------------------------


def test_daily_loss_limit_trips_when_todays_losses_reach_the_limit():
    # Day started at 1.0 BTC (0.97 now + 0.03 lost today): 3 % lost, limit 3 %.
    limits = ProtectionLimits(daily_loss_limit_pct=D("3"))
    history = [trade(60, "-0.02"), trade(30, "-0.01")]
    trip = daily_loss_trip(limits, history, D("0.97"), NOW)
    assert trip is not None and trip.code is ProtectionCode.DAILY_LOSS_LIMIT
    assert "3.00 %" in trip.message


def test_daily_loss_limit_nets_wins_and_ignores_yesterday():
    limits = ProtectionLimits(daily_loss_limit_pct=D("3"))
    yesterday = trade(14 * 60 + 1, "-0.50")  # closed 23:59 UTC the day before
    today = [trade(60, "-0.03"), trade(30, "0.01")]  # net −0.02 of 1.0: 2 %
    assert daily_loss_trip(limits, [yesterday, *today], D("0.98"), NOW) is None
    assert daily_loss_trip(limits, [*today, trade(10, "-0.01")], D("0.97"), NOW) is not None


def test_daily_loss_counts_a_trade_stamped_ahead_of_our_clock():
    # The exchange's (or the paper replay's) clock may run ahead: that loss is still today's.
    limits = ProtectionLimits(daily_loss_limit_pct=D("4"))
    assert daily_loss_trip(limits, [trade(-3, "-0.05")], D("0.95"), NOW) is not None


def test_daily_loss_limit_just_below_does_not_trip():
    limits = ProtectionLimits(daily_loss_limit_pct=D("3"))
    assert daily_loss_trip(limits, [trade(5, "-0.0299")], D("0.9701"), NOW) is None


# --- max drawdown --------------------------------------------------------------------------


def test_drawdown_trips_at_the_limit_below_the_peak():
    limits = ProtectionLimits(max_drawdown_pct=D("10"))
    trip = drawdown_trip(limits, D("9000"), D("10000"))
    assert trip is not None and trip.code is ProtectionCode.MAX_DRAWDOWN
    assert "10.00 %" in trip.message
    assert drawdown_trip(limits, D("9000.01"), D("10000")) is None


def test_drawdown_off_when_not_set():
    assert drawdown_trip(ProtectionLimits(), D("1"), D("10000")) is None


# --- together ------------------------------------------------------------------------------


def test_protection_tripped_reports_the_first_reason_and_none_when_clear():
    limits = ProtectionLimits(
        cooldown_minutes=15, daily_loss_limit_pct=D("5"), max_drawdown_pct=D("20")
    )
    clear = protection_tripped(
        limits=limits,
        trades=[trade(60, "-0.01", True)],
        equity=D("0.99"),
        peak_equity=D("1"),
        now=NOW,
    )
    assert clear is None
    cooling = protection_tripped(
        limits=limits,
        trades=[trade(5, "-0.01", True)],
        equity=D("0.99"),
        peak_equity=D("1"),
        now=NOW,
    )
    assert cooling.code is ProtectionCode.COOLDOWN_AFTER_STOP
    daily = protection_tripped(
        limits=limits,
        trades=[trade(5, "-0.06", True)],
        equity=D("0.94"),
        peak_equity=D("1"),
        now=NOW,
    )
    assert daily.code is ProtectionCode.DAILY_LOSS_LIMIT
    deep = protection_tripped(
        limits=limits,
        trades=[trade(5, "-0.06", True)],
        equity=D("0.8"),
        peak_equity=D("1"),
        now=NOW,
    )
    assert deep.code is ProtectionCode.MAX_DRAWDOWN


def test_a_new_high_is_its_own_peak():
    limits = ProtectionLimits(max_drawdown_pct=D("10"))
    assert (
        protection_tripped(limits=limits, trades=[], equity=D("2"), peak_equity=D("1"), now=NOW)
        is None
    )


def test_max_open_trades_blocks_new_entries_at_the_limit():
    limits = ProtectionLimits(max_open_trades=1)
    assert open_trades_trip(limits, 0) is None
    assert open_trades_trip(limits, 1).code is ProtectionCode.MAX_OPEN_TRADES
    assert open_trades_trip(ProtectionLimits(max_open_trades=3), 2) is None


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        cooldown_trip(
            ProtectionLimits(cooldown_minutes=5), [trade(1, "-1", True)], datetime(2026, 1, 1)
        )
