"""Writes about open brackets: follow their legs, record the trade from the broker's own fills,
re-protect a position that lost its stop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db import connection
from django.db.models.signals import post_save

from apps.brokers.base import (
    Fill,
    NotFound,
    OrderRequest,
    OrderState,
    Side,
    bracket_labels,
)
from apps.monitoring import metrics
from apps.monitoring.events import event_record
from apps.orders.brackets import ORDER_ROW_FIELDS, instrument_spec, order_row_update
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, Order, OrderRole, Trade
from tradebaas.fastsql import GuardedUpdate, Insert, Update, write_all

log = logging.getLogger("tradebaas.trades")


@dataclass(frozen=True, slots=True)
class BracketCheck:
    """What the exchange says about an open bracket."""

    closed: bool
    position_size: Decimal
    stop_live: bool
    exit_reason: str = ""
    vanished: bool = False  # none of its orders exists on the exchange (a fresh paper engine)
    # read with the legs when the position was flat (``bracket_read``): the bracket's fills
    # (None: not read, or the read failed) and the answers of the caller's ``when_flat`` reads
    fills: list[Fill] | None = None
    also: tuple[Any, ...] = ()
    changed: tuple[tuple[Order, Any], ...] = ()  # legs whose rows differ from the exchange


def bracket_check(gateway: BrokerGateway, bracket: Bracket) -> BracketCheck:
    """Refresh the legs' rows from the exchange and say whether the position is gone."""
    check = bracket_read(gateway, bracket)
    bracket_rows_write(bracket, changed=check.changed)
    return check


def bracket_rows_write(
    bracket: Bracket,
    *,
    changed: tuple[tuple[Order, Any], ...] = (),
    closed: ComputedTrade | None = None,
    guard: GuardedUpdate | None = None,
    guarded: list[Any] | tuple = (),
) -> tuple[Trade | None, bool, bool]:
    """ONE write (``fastsql.write_all``: one statement on PostgreSQL) of what following a
    bracket found: the legs' rows that ``changed`` (the rows and the exchange's orders, from
    ``bracket_read``), the ``closed`` trade with the bracket closed, and the caller's ``guard``
    with its ``guarded`` rows (the runner's moves: written only if the guard holds; the rest
    is written in any case).

    Returns ``(trade, new, held)``: the bracket's trade (None if ``closed`` is None), whether
    this write recorded it (else someone else had: the caller announces only a new one) and
    whether the guard held."""
    updates = []
    for row, order in changed:
        order_row_update(row, order, save=False)
        updates.append(Update(row, ORDER_ROW_FIELDS))
    inserts = []
    if closed is not None:
        bracket.state = BracketState.CLOSED
        updates.append(Update(bracket, ("state",)))
        inserts.append(Insert(closed.trade, skip_conflict=True))
    held = write_all(updates, inserts, guard, guarded)
    # the one statement sends no post_save: the page's live state is asked for here
    post_save.send(
        sender=Bracket,
        instance=bracket,
        created=False,
        update_fields=None,
        raw=False,
        using=connection.alias,
    )
    if closed is None:
        return None, False, held
    if closed.trade.pk is None:  # recorded by someone else meanwhile
        return Trade.objects.filter(bracket=bracket).first(), False, held
    metrics.TRADES.labels(result="win" if closed.trade.pnl > 0 else "loss").inc()
    return closed.trade, True, held


def bracket_read(
    gateway: BrokerGateway,
    bracket: Bracket,
    *,
    when_flat: list[tuple[str, tuple[Any, ...]]] | tuple = (),
    together: bool = False,
    rows: list[Order] | None = None,
) -> BracketCheck:
    """Read the bracket on the exchange: whether the position is gone, its legs' states (rows
    to write in ``changed``). Writes nothing.

    The position is read BEFORE the orders: a leg that fills between the two reads is then
    seen filled (the position read earlier still showed it open, or showed it flat because it
    had filled). Read the other way round, a stop filling in between looked like a position
    closed by something else ("closed"), and the cooldown, which counts stop-outs, missed it.
    ``trade_record`` takes the reason from the fills in any case.

    When the position is flat, the bracket's fills (for ``trade_record``) and the caller's
    ``when_flat`` reads go out with the legs' states: one round trip after the position's.

    ``together`` (a decision may follow at once): the position, the legs and the rest go out
    in ONE round trip, the position first. The simulator answers a connection's
    requests in order; Deribit does not promise it, so the answer is kept only when it cannot
    come from a reply out of order: the position still open, or flat with the stop or the
    target filled. Flat with no exit leg filled (what legs read before their fill would show)
    is read again in order.

    ``rows``: the bracket's order rows that have an exchange id, as the caller keeps them (the
    rows of ``changed`` are those objects), else read here.
    """
    spec = instrument_spec(gateway, bracket.instrument)
    if rows is None:
        rows = bracket_leg_rows(bracket)
    position = ("positions", (spec.settlement_currency,))
    legs = [("order_state", (row.exchange_id,)) for row in rows]
    flat_reads = [("fills", _fills_args(bracket)), *when_flat]
    if together:
        positions, *answers = gateway.call_all([position, *legs, *flat_reads])
        check = _checked(bracket, rows, _size(bracket, positions), answers)
        if check.position_size != 0 or check.exit_reason in ("stop_loss", "take_profit"):
            return check
    size = _size(bracket, gateway.call("positions", spec.settlement_currency))
    # the legs' states in one round trip (after the position: see above)
    answers = gateway.call_all(legs + (flat_reads if size == 0 else []))
    return _checked(bracket, rows, size, answers)


def bracket_leg_rows(bracket: Bracket) -> list[Order]:
    """The bracket's order rows that were placed (have an exchange id)."""
    return list(bracket.orders.exclude(exchange_id=""))


def _size(bracket: Bracket, positions: Any) -> Decimal:
    if isinstance(positions, BaseException):
        raise positions
    return sum((p.size for p in positions if p.instrument == bracket.instrument), Decimal("0"))


def _checked(bracket: Bracket, rows: list[Order], size: Decimal, answers: list) -> BracketCheck:
    """``bracket_read``'s answer from the position's ``size`` and ``answers``: the legs'
    states (one per row), then, when read, the fills and the caller's reads."""
    states: dict[str, Any] = {}
    known, missing = len(rows), 0
    changed = []
    for row, order in zip(rows, answers, strict=False):
        if isinstance(order, NotFound):
            missing += 1
            continue
        if isinstance(order, BaseException):
            raise order
        states[row.role] = order
        if row.status != order.state or row.filled_amount != order.filled_amount:
            changed.append((row, order))
    flat = size == 0
    fills = None
    if flat and len(answers) > len(rows) and not isinstance(answers[len(rows)], BaseException):
        fills = _ours(bracket, answers[len(rows)], {row.exchange_id for row in rows})
    stop_live = any(
        o.is_live for role, o in states.items() if role in (OrderRole.STOP_LOSS, OrderRole.CLOSE)
    )
    entry = states.get(OrderRole.ENTRY)
    entered = bool(entry and entry.filled_amount > 0)
    exit_reason = ""
    for role, reason in (
        (OrderRole.STOP_LOSS, "stop_loss"),
        (OrderRole.CLOSE, "stop_loss"),
        (OrderRole.TAKE_PROFIT, "take_profit"),
    ):
        leg = states.get(role)
        if leg is not None and leg.state is OrderState.FILLED:
            exit_reason = reason
    closed = entered and flat and (entry.state is not OrderState.OPEN)
    if closed and not exit_reason:
        exit_reason = "closed"
    return BracketCheck(
        closed=closed,
        position_size=size,
        stop_live=stop_live,
        exit_reason=exit_reason,
        vanished=known > 0 and missing == known,
        fills=fills,
        also=tuple(answers[len(rows) + 1 :]) if flat else (),
        changed=tuple(changed),
    )


def exit_reason_of(bracket: Bracket, exits: list[Fill]) -> str:
    """Which leg's fill flattened the position: "stop_loss" (the stop, or a stop placed to
    re-protect it: same label), "take_profit", or "" (not a leg of ours: a manual close)."""
    if not exits:
        return ""
    _, stop_label, tp_label = bracket_labels(bracket.bracket_id)
    last = exits[-1].label
    return {stop_label: "stop_loss", tp_label: "take_profit"}.get(last, "")


def _fills_args(bracket: Bracket) -> tuple[Any, ...]:
    """``fills`` from a minute before the bracket opened."""
    return (bracket.instrument, max(0, (bracket.opened_ms or 0) - 60_000))


def _ours(bracket: Bracket, fills: list[Fill], ids: set[str]) -> list[Fill]:
    """Ours by label or id; plus unlabelled fills (a position closed by hand on the exchange):
    only one bracket holds the instrument at a time, so they belong to this one."""
    prefix = f"tb-{bracket.bracket_id}-"
    return [
        f
        for f in fills
        if f.label.startswith(prefix) or f.order_id in ids or not f.label.startswith("tb-")
    ]


def _fills_of(gateway: BrokerGateway, bracket: Bracket) -> list[Fill]:
    """The fills of ``bracket`` on the exchange (see ``_ours``)."""
    ids = set(bracket.orders.exclude(exchange_id="").values_list("exchange_id", flat=True))
    return _ours(bracket, gateway.call("fills", *_fills_args(bracket)), ids)


def _avg(fills: list[Fill], *, inverse: bool) -> Decimal:
    """Average price of ``fills``: USD-weighted harmonic mean for an inverse contract (what the
    coin P&L is made of), quantity-weighted mean for a linear one."""
    amount = sum((f.amount for f in fills), Decimal("0"))
    if not amount:
        return Decimal("0")
    if len({f.price for f in fills}) == 1:
        return fills[0].price
    if inverse:
        return amount / sum((f.amount / f.price for f in fills), Decimal("0"))
    return sum((f.price * f.amount for f in fills), Decimal("0")) / amount


def _realized(
    side: Side, entries: list[Fill], exits: list[Fill], *, inverse: bool, currency: str
) -> Decimal:
    """The P&L before fees as the exchange credits it: per exit fill, against the position's
    entry value, rounded to the currency's quantum once per fill (so the trade's P&L is the
    balance's change, not a figure a few units of the last digit away)."""
    from apps.brokers.simulator.instruments import CURRENCY_QUANTUM

    quantum = CURRENCY_QUANTUM.get(currency, Decimal("1e-10"))
    entry_value = sum(
        ((f.amount / f.price if inverse else f.amount * f.price) for f in entries), Decimal("0")
    )
    open_size = sum((f.amount for f in entries), Decimal("0"))
    gross = Decimal("0")
    for fill in exits:
        if open_size <= 0:
            break
        closing = min(fill.amount, open_size)
        entry_part = entry_value * closing / open_size
        exit_part = closing / fill.price if inverse else closing * fill.price
        gain = entry_part - exit_part if inverse else exit_part - entry_part
        gross += (gain if side is Side.BUY else -gain).quantize(quantum, rounding=ROUND_HALF_EVEN)
        entry_value -= entry_part
        open_size -= closing
    return gross


def trade_record(
    gateway: BrokerGateway,
    bracket: Bracket,
    *,
    exit_reason: str,
    recorded_by: str = "loop",
    events: list[Callable[[], Any]] | None = None,
    fills: list[Fill] | None = None,
) -> Trade | None:
    """Record the closed trade of ``bracket`` from the broker's fills and fees; idempotent.

    The exit reason is the fills' own when a leg of the bracket flattened the position (the
    stop: "stop_loss", the target: "take_profit"); ``exit_reason`` is used otherwise (a manual
    close, a position closed by hand on the exchange). None when the fills do not (yet) show a
    complete round trip. ``events``: the trade's event (history line, alert) is queued there
    for the caller to send, instead of being recorded with the row. ``fills``: the bracket's
    fills as the caller read them once its position was flat (``bracket_read``), else read here.
    """
    existing = Trade.objects.filter(bracket=bracket).first()
    if existing:
        return existing
    closed = trade_compute(
        gateway, bracket, exit_reason=exit_reason, recorded_by=recorded_by, fills=fills
    )
    if closed is None:
        return None
    trade, new, _ = bracket_rows_write(bracket, closed=closed)
    if new:
        if events is None:
            closed.announce()
        else:
            events.append(closed.announce)
    return trade


@dataclass(frozen=True, slots=True)
class ComputedTrade:
    """A trade computed from the fills (``trade_compute``), not yet saved; ``announce`` records
    its event (history line, alert) once it is."""

    trade: Trade
    announce: Callable[[], Any]


def trade_compute(
    gateway: BrokerGateway,
    bracket: Bracket,
    *,
    exit_reason: str,
    recorded_by: str = "loop",
    fills: list[Fill] | None = None,
) -> ComputedTrade | None:
    """The closed trade of ``bracket`` from the broker's fills and fees, unsaved (see
    ``trade_record``); None when the fills do not (yet) show a complete round trip."""
    spec = instrument_spec(gateway, bracket.instrument)
    if fills is None:
        fills = _fills_of(gateway, bracket)
    side = Side(bracket.side)
    entries = [f for f in fills if f.direction is side and f.label.startswith("tb-")]
    entered = sum((f.amount for f in entries), Decimal("0"))
    adopted = (
        None
        if entries
        else bracket.orders.filter(role=OrderRole.ENTRY, order_type="adopted").first()
    )
    if adopted is not None:
        # a position we adopted: its entry happened before us; the position's average price
        # (read when adopted) stands in for the entry fills we never saw
        entries = [
            Fill(
                trade_id="adopted",
                order_id="",
                instrument=bracket.instrument,
                direction=side,
                price=adopted.average_price or Decimal("0"),
                amount=bracket.amount,
                fee=Decimal("0"),
                fee_currency=spec.settlement_currency,
                liquidity="T",
                label="",
                timestamp_ms=bracket.opened_ms or 0,
            )
        ]
        entered = bracket.amount
    exits: list[Fill] = []
    exited = Decimal("0")
    first_entry = min((f.timestamp_ms for f in entries), default=0)
    for fill in fills:  # oldest first: the exits that flatten what was entered, no more
        if (
            fill.direction is side.opposite
            and fill.timestamp_ms >= first_entry
            and exited < entered
        ):
            exits.append(fill)
            exited += fill.amount
    fills = entries + exits
    if not entries or not exits or exited < entered:
        log.warning(
            "bracket %s: fills incomplete (entered %s, exited %s)",
            bracket.bracket_id,
            entered,
            exited,
        )
        return None
    exit_reason = exit_reason_of(bracket, exits) or exit_reason
    inverse = spec.is_inverse
    entry_price, exit_price = _avg(entries, inverse=inverse), _avg(exits, inverse=inverse)
    gross = _realized(side, entries, exits, inverse=inverse, currency=spec.settlement_currency)
    fees = sum((f.fee for f in fills), Decimal("0"))
    pnl = gross - fees
    pnl_usd = pnl * exit_price if spec.is_inverse else pnl
    opened = min(f.timestamp_ms for f in entries)
    closed = max(f.timestamp_ms for f in exits)
    trade = Trade(
        bracket=bracket,
        run_id=bracket.run_id,
        broker_account_id=bracket.broker_account_id,
        instrument=bracket.instrument,
        side=bracket.side,
        amount=entered,
        entry_price=entry_price.quantize(Decimal("1e-10")),
        exit_price=exit_price.quantize(Decimal("1e-10")),
        pnl=pnl.quantize(Decimal("1e-12")),
        pnl_usd=pnl_usd.quantize(Decimal("1e-8")),
        fees=fees.quantize(Decimal("1e-12")),
        currency=spec.settlement_currency,
        opened_at=datetime.fromtimestamp(opened / 1000, tz=UTC),
        closed_at=datetime.fromtimestamp(closed / 1000, tz=UTC),
        duration_seconds=Decimal(closed - opened) / 1000,
        exit_reason=exit_reason,
        risk_settings=bracket.risk_settings,
        fill_ids=[f.trade_id for f in fills],
        recorded_by=recorded_by,
    )
    announce = functools.partial(
        event_record,
        kind="bracket_closed",
        message=f"Trade closed by {exit_reason}: {bracket.side} {entered} "
        f"{bracket.instrument} {entry_price:.2f} → {exit_price:.2f}, "
        f"P&L {pnl:.8f} {spec.settlement_currency} (${pnl_usd:.2f}), fees {fees:.8f}",
        context={"pnl": pnl, "pnl_usd": pnl_usd, "fees": fees, "by": recorded_by},
        run_id=bracket.run_id,
        bracket_id=bracket.bracket_id,
        alert=True,
    )
    return ComputedTrade(trade, announce)


def bracket_protect(gateway: BrokerGateway, bracket: Bracket, *, policy: str = "protect") -> str:
    """A position of ``bracket`` without a live stop: place a reduce-only stop (``protect``,
    labelled as the bracket's stop) or close it (``close``). Returns what was done."""
    spec = instrument_spec(gateway, bracket.instrument)
    held = [
        p
        for p in gateway.call("positions", spec.settlement_currency)
        if p.instrument == bracket.instrument and p.size != 0
    ]
    if not held:
        return "flat"
    position = held[0]
    if policy == "close":
        gateway.call("close_position", bracket.instrument)
        action = "closed"
    else:
        _, stop_label, _ = bracket_labels(bracket.bracket_id)
        side = Side.SELL if position.size > 0 else Side.BUY
        order = gateway.call(
            "place_order",
            OrderRequest(
                instrument=bracket.instrument,
                side=side,
                amount=abs(position.size),
                order_type="stop_market",
                label=stop_label,
                trigger_price=bracket.stop_price,
                trigger="mark_price",
                reduce_only=True,
            ),
        )
        row = Order.objects.create(
            bracket=bracket,
            role=OrderRole.CLOSE,
            label=stop_label,
            order_type="stop_market",
            side=str(side),
            amount=abs(position.size),
            trigger_price=bracket.stop_price,
            reduce_only=True,
        )
        order_row_update(row, order)
        action = f"stop placed ({order.order_id} at {bracket.stop_price})"
    event_record(
        kind="position_protected",
        message=f"Position {position.size} {bracket.instrument} had no stop: {action}",
        level="warning",
        context={"policy": policy, "size": position.size},
        run_id=bracket.run_id,
        bracket_id=bracket.bracket_id,
        alert=True,
    )
    return action
