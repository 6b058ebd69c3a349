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

When a trade closes, the loop builds the next context at once from the reads the close made
anyway (the equity, our open orders and the positions go out with the legs' states and the
fills, ``account``), once the trade is written, with the settings read while the position was
open (``Standing``: the control version first, then the settings). A decision on the candle of
the close then reads only the database (the trades and the live brackets: one query).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Standing:
    """The parts of an entry context that do not move with the account: the control version
    and, read after it, the risk settings (their row, and as a model). Read while a position is
    open, they serve the context built at its close: a settings change made since moved the
    control version, which the fire checks (a context without an armed intent compares the
    settings row at the close instead)."""

    control: int
    row: tuple | None
    settings: RiskSettings
    read_at: float  # time.monotonic()


def standing_read() -> Standing:
    control = control_version()  # first: it covers what is read after it
    row = risk_settings_values()
    return Standing(control, row, risk_settings_current(), time.monotonic())


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


def _history(
    instrument: str, broker: str, account_id: int | None
) -> tuple[tuple[RiskTrade, ...], int]:
    """The protections' inputs: the instrument's trades closed in the last ``TRADES_LOOKBACK``
    and the number of our live brackets (this broker and account). On PostgreSQL in ONE query
    of SQL built once (no model instances: a busy day holds hundreds of trades)."""
    since = timezone.now() - TRADES_LOOKBACK
    read = _history_one_query if connection.vendor == "postgresql" else _history_orm
    rows, count = read(since, instrument, broker, account_id)
    trades = tuple(
        RiskTrade(closed_at=closed_at, pnl=pnl, stopped_out=reason == "stop_loss")
        for closed_at, pnl, reason in rows
    )
    return trades, count


def _history_one_query(
    since: datetime, instrument: str, broker: str, account_id: int | None
) -> tuple[list[tuple], int]:
    """(closed_at, pnl, exit_reason) of each trade, newest first, and the live brackets' count."""
    live = [str(state) for state in LIVE_BRACKET_STATES]
    account = [] if account_id is None else [account_id]
    with connection.cursor() as cursor:
        cursor.execute(
            _history_sql(account_id is None), [since, instrument, broker, *account, live]
        )
        rows = cursor.fetchall()
    count = rows.pop()[3]  # the last row: the brackets' count
    return [row[:3] for row in rows], count


def _history_orm(
    since: datetime, instrument: str, broker: str, account_id: int | None
) -> tuple[list[tuple], int]:
    """``_history_one_query`` through the ORM (other databases)."""
    rows = Trade.objects.filter(closed_at__gte=since, instrument=instrument).values_list(
        "closed_at", "pnl", "exit_reason"
    )
    count = Bracket.objects.filter(
        broker=broker, broker_account_id=account_id, state__in=LIVE_BRACKET_STATES
    ).count()
    return list(rows), count


@functools.cache
def _history_sql(no_account: bool) -> str:
    quote = connection.ops.quote_name
    trade, bracket = Trade._meta, Bracket._meta

    def col(opts, name: str) -> str:
        return quote(opts.get_field(name).column)

    account = col(bracket, "broker_account_id")
    account_match = f"{account} IS NULL" if no_account else f"{account} = %s"
    closed_at = col(trade, "closed_at")
    # the trades newest first (the model's order), then one row with the brackets' count
    return (
        f"SELECT {closed_at}, {col(trade, 'pnl')}, {col(trade, 'exit_reason')}, "  # noqa: S608
        f"NULL::bigint, 0, {quote(trade.pk.column)} FROM {quote(trade.db_table)} "
        f"WHERE {closed_at} >= %s AND {col(trade, 'instrument')} = %s "
        f"UNION ALL SELECT NULL, NULL, NULL, COUNT(*), 1, NULL FROM {quote(bracket.db_table)} "
        f"WHERE {col(bracket, 'broker')} = %s AND {account_match} "
        f"AND {col(bracket, 'state')} = ANY(%s) ORDER BY 5, 1 DESC, 6 DESC"
    )


def account_reads(currency: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The account's reads of an entry context, for ``call_all``: the equity (summary), our
    open orders and the positions in ``currency`` (the pre-flight)."""
    return [
        ("account_summary", (currency,)),
        ("open_orders", (None, LABEL_PREFIX)),
        ("positions", (currency,)),
    ]


def entry_context_gather(
    gateway: BrokerGateway,
    *,
    instrument: str,
    account_id: int | None,
    settings_row: tuple | object | None = _READ_NOW,
    control: int | None = None,
    account: tuple[Any, list, list] | None = None,
    standing: Standing | None = None,
) -> EntryContext:
    """Read everything but the signal now (broker and database). ``settings_row``: the
    settings row as the caller just read it (``risk_settings_values``), else read here.
    ``control``: the control version the caller read before that row, else read here first.
    ``account``: the account's reads (``account_reads``: summary, our open orders, positions)
    as the caller just made them, for a broker that pushes every account change; else read
    here. ``standing``: the control version and the settings as read earlier (``standing_read``)
    instead of the three."""
    if standing is not None:
        control, settings_row, settings = standing.control, standing.row, standing.settings
    else:
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
        summary, orders, positions = account or _each(gateway.call_all(account_reads(currency)))
        check = account_check(gateway, instrument, orders=orders, positions=positions)
    else:
        summary = gateway.call("account_summary", currency)
    trades, open_brackets = _history(instrument, gateway.broker_id, account_id)
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
