"""What a trade decision reads besides the signal, gathered before the candle closes.

The loop enters only when flat, in ANALYZING, on a closed candle. Everything a decision needs
except the signal can be read while it waits for that candle: the risk settings, the
instrument's spec, the equity and available funds, the account's pre-flight (orphan orders, a
position on the instrument), the protections' inputs (recent trades, open brackets). The
control version (apps/strategies/control.py) is read first: every Stop, Pause or settings
change made outside the loop moves it once committed. So with an intent armed ahead
(apps/orders/armed.py) the close itself costs the analysis, the sizing, ONE Redis round trip
(the lock check that fires the intent, which fires nothing if the control version moved since
the context's reads: the loop then reads the run and the settings again, ``close_read``, and
decides again) and ONE request to the exchange; no database read. Without an armed intent, the
close reads the run's row and the settings in ONE query (``close_read``) and rebuilds the context
when the settings row differs from the one it was built with. The plan's rows and the run's
moves are written once the exchange has answered.

A context is used only while it is current. The loop drops it on any account event the broker
pushes (an order, a fill, a position), on a disconnect or reconnect, after a manual command or
an orphan sweep, after each trade, and when it is older than ``MAX_AGE_S``. The pre-flight part
is trusted only for a broker that pushes every change of the account in that currency
(Deribit's ``user.changes``, paper); for the others it is read again at the close. The
protections are evaluated at the close from the gathered inputs, with the clock of the close
(the cooldown and the UTC day move on by themselves).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from apps.brokers.base import LABEL_PREFIX, InstrumentSpec
from apps.orders.brackets import AccountCheck, account_check, instrument_spec
from apps.orders.gateway import BrokerGateway
from apps.orders.models import LIVE_BRACKET_STATES, Bracket, Trade
from apps.risk.models import SINGLETON_ID, RiskSettings
from apps.risk.protections import ClosedTrade as RiskTrade
from apps.risk.selectors import risk_settings_current, risk_settings_values
from apps.strategies.control import control_version

MAX_AGE_S = 15.0  # the equity a % risk is sized on is at most this old (and no account event)
TRADES_LOOKBACK = timedelta(days=2)  # enough for the UTC day, the cooldown and the streaks
_READ_NOW = object()


@dataclass(frozen=True, slots=True)
class EntryContext:
    spec: InstrumentSpec
    settings: RiskSettings
    settings_row: tuple | None  # risk_settings_values() read before ``settings``
    equity: Decimal
    available_funds: Decimal
    check: AccountCheck | None  # None: read the account again at the close
    trades: tuple[RiskTrade, ...]
    open_brackets: int
    built_at: float  # time.monotonic()
    control: int | None = None  # the control version read before the settings (control.py)

    def current(self, settings_row: tuple | None) -> bool:
        """Still usable for a decision taken now, the settings row read just now being
        ``settings_row``? (A row changed in between was read before ``settings`` and so
        differs: the context is rebuilt, never used with older settings.)"""
        return self.young() and settings_row == self.settings_row

    def young(self) -> bool:
        """Not older than ``MAX_AGE_S``."""
        return time.monotonic() - self.built_at <= MAX_AGE_S


def close_read(run_id: int) -> tuple[tuple | None, tuple | None]:
    """At the close, in ONE query: the run's (state, is_active, fence) and the risk settings
    row as ``risk_settings_values`` reads it (None: no row, the defaults apply). The run is
    None when its row is gone."""
    with connection.cursor() as cursor:
        cursor.execute(_close_sql(), [SINGLETON_ID, run_id])
        row = cursor.fetchone()
    if row is None:
        return None, None
    settings = row[3:]
    return tuple(row[:3]), (settings if settings[_settings_pk()] is not None else None)


@functools.cache
def _settings_pk() -> int:
    fields = RiskSettings._meta.concrete_fields
    return next(i for i, f in enumerate(fields) if f.primary_key)


@functools.cache
def _close_sql() -> str:
    from apps.strategies.models import StrategyRun

    quote = connection.ops.quote_name
    run, risk = StrategyRun._meta, RiskSettings._meta
    columns = ", ".join(f"s.{quote(f.column)}" for f in risk.concrete_fields)
    state, active, fence = (quote(run.get_field(n).column) for n in ("state", "is_active", "fence"))
    return (
        f"SELECT r.{state}, r.{active}, r.{fence}, {columns} "  # noqa: S608
        f"FROM {quote(run.db_table)} r LEFT JOIN {quote(risk.db_table)} s "
        f"ON s.{quote(risk.pk.column)} = %s WHERE r.{quote(run.pk.column)} = %s"
    )


def _each(answers: list) -> list:
    """``call_all``'s answers, raising the first failure."""
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers


def entry_context_gather(
    gateway: BrokerGateway,
    *,
    instrument: str,
    account_id: int | None,
    settings_row: tuple | object | None = _READ_NOW,
    control: int | None = None,
) -> EntryContext:
    """Read everything but the signal now (broker and database). ``settings_row``: the
    settings row as the caller just read it (``risk_settings_values``), else read here.
    ``control``: the control version the caller read before that row, else read here first."""
    if settings_row is _READ_NOW:
        if control is None:
            control = control_version()
        settings_row = risk_settings_values()
    settings = risk_settings_current()
    spec = instrument_spec(gateway, instrument)
    currency = spec.settlement_currency
    check = None
    if gateway.pushes_account_changes(currency):
        # the equity and the pre-flight's reads go out together: one round trip
        summary, orders, positions = _each(
            gateway.call_all(
                [
                    ("account_summary", (currency,)),
                    ("open_orders", (None, LABEL_PREFIX)),
                    ("positions", (currency,)),
                ]
            )
        )
        check = account_check(gateway, instrument, orders=orders, positions=positions)
    else:
        summary = gateway.call("account_summary", currency)
    since = timezone.now() - TRADES_LOOKBACK
    trades = tuple(
        RiskTrade(closed_at=t.closed_at, pnl=t.pnl, stopped_out=t.exit_reason == "stop_loss")
        for t in Trade.objects.filter(closed_at__gte=since, instrument=instrument).only(
            "closed_at", "pnl", "exit_reason"
        )
    )
    open_brackets = Bracket.objects.filter(
        broker=gateway.broker_id, broker_account_id=account_id, state__in=LIVE_BRACKET_STATES
    ).count()
    return EntryContext(
        spec=spec,
        settings=settings,
        settings_row=settings_row,
        equity=summary.equity,
        available_funds=summary.available_funds,
        check=check,
        trades=trades,
        open_brackets=open_brackets,
        built_at=time.monotonic(),
        control=control,
    )
