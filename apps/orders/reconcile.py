"""Reconcile our rows with the broker before a loop does anything else (start, resume, restart,
after a crash).

In order: resolve brackets whose outcome is unknown by their labels; for every open bracket
either record the trade that closed while we were away (no trade lost from history) or make sure
its position has a stop (re-protect, or close by policy); adopt a position that no bracket
claims; cancel orphans. Returns a summary and the bracket that holds the open position, if any.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.db import transaction

from apps.brokers.base import LABEL_PREFIX, BrokerError, Side
from apps.monitoring.events import event_record
from apps.orders.armed import FIRED, armed_claim, armed_forget, mark_key
from apps.orders.brackets import (
    BracketBroken,
    BracketUnknown,
    _find_by_labels,
    instrument_spec,
    new_bracket_id,
    order_row_update,
    resolve_unknown,
    rollback,
)
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, Order, OrderRole, OrderStatus
from apps.orders.orphans import orphan_sweep_once
from apps.orders.services import bracket_check, bracket_protect, trade_record
from tradebaas.redis import redis_client

log = logging.getLogger("tradebaas.reconcile")
# after a fired intent's request expired (valid_until = fire time + the order timeout), the
# exchange's clock and its last word may still lag a little: as the Deribit broker's own wait
ARMED_GRACE_S = 0.5


@dataclass
class ReconcileReport:
    resolved: list[str] = field(default_factory=list)
    trades: list[str] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    open_bracket: Bracket | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "resolved": self.resolved,
            "trades": self.trades,
            "protected": self.protected,
            "adopted": self.adopted,
            "orphans_cancelled": self.orphans,
            "open_bracket": self.open_bracket.bracket_id if self.open_bracket else None,
        }


def reconcile(
    gateway: BrokerGateway,
    *,
    instrument: str,
    run_id: int | None,
    account_id: int | None,
    policy: str = "protect",
    stop_pct: Decimal = Decimal("1"),
    keepalive: Callable[[], None] | None = None,
) -> ReconcileReport:
    """``keepalive``: called while the reconcile waits (the loop renews its lock with it)."""
    report = ReconcileReport()
    mine = Bracket.objects.filter(broker=gateway.broker_id, broker_account_id=account_id)
    # 0. intents armed ahead (armed.py): never sent -> gone; sent -> an unknown outcome (1.)
    for bracket in mine.filter(state=BracketState.ARMED):
        outcome = _settle_armed(gateway, bracket, keepalive)
        if outcome:
            report.resolved.append(f"{bracket.bracket_id}:{outcome}")
    # 1. unknown outcomes, by label
    for bracket in mine.filter(
        state__in=(BracketState.INTENT, BracketState.PLACING, BracketState.UNKNOWN)
    ):
        rows = {row.role: row for row in bracket.orders.all()}
        try:
            result = resolve_unknown(gateway, bracket)
        except BracketUnknown as exc:
            if not exc.orders:
                raise  # the broker cannot be asked now
            # the entry exists without its legs: follow the entry; step 2 protects its position
            entry = gateway.call("order_state", exc.orders[0])
            if OrderRole.ENTRY in rows:
                order_row_update(rows[OrderRole.ENTRY], entry)
            filled = entry.filled_amount > 0 or entry.is_live
            bracket.state = BracketState.OPEN if filled else BracketState.FAILED
            bracket.opened_ms = bracket.opened_ms or entry.created_ms or int(time.time() * 1000)
            bracket.save(update_fields=["state", "opened_ms", "updated_at"])
            report.resolved.append(f"{bracket.bracket_id}:entry_without_legs")
            continue
        if result is None:
            report.resolved.append(f"{bracket.bracket_id}:not_placed")
            continue
        report.resolved.append(
            f"{bracket.bracket_id}:{_settle_resolved(gateway, bracket, rows, result)}"
        )
    # 2. open brackets: closed while away -> trade; open without a stop -> protect
    for bracket in mine.filter(state=BracketState.OPEN).order_by("id"):
        check = bracket_check(gateway, bracket)
        if check.vanished and check.position_size == 0:
            bracket.state = BracketState.FAILED
            bracket.error = "none of its orders exists on the exchange any more"
            bracket.save(update_fields=["state", "error", "updated_at"])
            report.resolved.append(f"{bracket.bracket_id}:vanished")
            continue
        if check.closed:
            trade = trade_record(
                gateway,
                bracket,
                exit_reason=check.exit_reason,
                recorded_by="reconcile",
                fills=check.fills,  # read with the legs: not again
            )
            if trade is not None:
                report.trades.append(bracket.bracket_id)
            continue
        if check.position_size == 0:
            continue  # entry still resting (limit): its legs wait with it
        if not check.stop_live:
            report.protected.append(
                f"{bracket.bracket_id}:{bracket_protect(gateway, bracket, policy=policy)}"
            )
            if policy == "close":
                check = bracket_check(gateway, bracket)
                if check.closed:
                    trade_record(gateway, bracket, exit_reason="closed", recorded_by="reconcile")
                    continue
        if bracket.instrument == instrument:
            report.open_bracket = bracket
    # 3. a position no bracket claims: adopt it and make sure it has a stop
    spec = instrument_spec(gateway, instrument)
    held = [
        p
        for p in gateway.call("positions", spec.settlement_currency)
        if p.instrument == instrument and p.size != 0
    ]
    if held and report.open_bracket is None:
        report.open_bracket = _adopt(
            gateway, held[0], run_id=run_id, account_id=account_id, policy=policy, pct=stop_pct
        )
        report.adopted.append(report.open_bracket.bracket_id)
    # 4. orphans
    swept = orphan_sweep_once(gateway, run_id=run_id)
    report.orphans += swept["cancelled"]
    if swept["failed"]:
        raise BracketBroken(
            f"orphans could not be cancelled: {', '.join(swept['failed'])}",
            orders=swept["failed"],
        )
    if any((report.resolved, report.trades, report.protected, report.adopted, report.orphans)):
        event_record(
            kind="reconciled",
            message="Reconciled with the broker: "
            + ", ".join(f"{k}={v}" for k, v in report.as_dict().items() if v),
            level="warning" if report.protected or report.adopted else "info",
            context=report.as_dict(),
            run_id=run_id,
        )
    return report


def _settle_armed(
    gateway: BrokerGateway, bracket: Bracket, keepalive: Callable[[], None] | None = None
) -> str:
    """An armed intent left by a loop that ended without disarming it (a crash). Its mark
    says whether the request went out (see apps/orders/armed.py). Returns what was done ('' for
    an intent never sent, whose rows are simply deleted)."""
    bracket_id = bracket.bracket_id
    mark = armed_claim(bracket_id)
    if not mark.startswith(FIRED) and mark:  # armed or void: never sent, never will be
        armed_forget(bracket.bracket_id, bracket.pk)
        return ""
    # sent (or the mark was lost: taken as sent just now): once the request can no longer
    # arrive, its labels say what exists
    sent_ms = int(mark[len(FIRED) :]) if mark else int(time.time() * 1000)
    found = _armed_lookup(gateway, bracket, sent_ms, keepalive)
    entries = found[OrderRole.ENTRY]
    legs = found[OrderRole.STOP_LOSS] + found[OrderRole.TAKE_PROFIT]
    with transaction.atomic():
        # still ARMED? (a loop that lost its lock a moment ago may have written the answer)
        bracket = Bracket.objects.select_for_update().filter(pk=bracket.pk).first()
        if bracket is None or bracket.state != BracketState.ARMED:
            redis_client().delete(mark_key(bracket_id))
            return "recorded_by_its_loop"
        rows = {row.role: row for row in bracket.orders.all()}
        if not entries and not legs:
            bracket.state = BracketState.FAILED
            bracket.error = "sent by a loop that crashed; nothing with its labels on the exchange"
            status = OrderStatus.NOT_PLACED
            outcome = "not_placed"
        else:
            _fill_from_exchange(bracket, found)
            status = OrderStatus.SENT
            outcome = "sent"  # an unknown outcome now: step 1 settles it
        bracket.save()
        for role, row in rows.items():
            if bracket.side:
                side = Side(bracket.side)
                row.side = str(side if role == OrderRole.ENTRY else side.opposite)
            row.amount = bracket.amount
            row.status = status
            row.save()
    redis_client().delete(mark_key(bracket_id))
    return outcome


def _fill_from_exchange(bracket: Bracket, found: dict[str, list]) -> None:
    """An armed bracket's plan as the exchange holds it (the loop died before writing it)."""
    entries, stops, takes = (
        found[OrderRole.ENTRY],
        found[OrderRole.STOP_LOSS],
        found[OrderRole.TAKE_PROFIT],
    )
    legs = stops + takes
    entry = entries[0] if entries else None
    side = entry.direction if entry else legs[0].direction.opposite
    bracket.side = str(side)
    bracket.amount = entry.amount if entry else legs[0].amount
    bracket.stop_price = (stops[0].trigger_price if stops else None) or 0
    bracket.take_profit_price = ((takes[0].price or takes[0].trigger_price) if takes else None) or 0
    bracket.sizing = {"recovered": "sent by a loop that crashed before recording its plan"}
    bracket.state = BracketState.UNKNOWN
    bracket.error = "sent by a loop that crashed before the answer; resolved by label"


def _armed_lookup(
    gateway: BrokerGateway,
    bracket: Bracket,
    sent_ms: int,
    keepalive: Callable[[], None] | None = None,
) -> dict[str, list]:
    """The orders with the bracket's labels, read once a request sent at ``sent_ms`` can no
    longer arrive (its ``valid_until``: the broker's order timeout after that moment)."""
    timeout = float(getattr(gateway.broker, "order_timeout", 0) or 0)
    until = sent_ms / 1000 + timeout + ARMED_GRACE_S
    while timeout and time.time() < until:
        if keepalive is not None:
            keepalive()
        time.sleep(min(0.25, max(0.0, until - time.time())))
    try:
        return _find_by_labels(gateway, bracket)
    except BrokerError as exc:
        raise BracketUnknown(
            f"bracket {bracket.bracket_id}: sent before a crash and not resolvable now: {exc}",
            bracket_id=bracket.bracket_id,
        ) from exc


def _settle_resolved(gateway, bracket: Bracket, rows: dict, result) -> str:
    """A bracket found by label after a crash: whatever the entry did, the rows now say it.

    An entry that filled (even if its position is gone since) makes the bracket OPEN, so step 2
    records its trade or protects its position; one that never filled is cancelled with its legs.
    """
    for role, order in (
        (OrderRole.ENTRY, result.entry),
        (OrderRole.STOP_LOSS, result.stop_loss),
        (OrderRole.TAKE_PROFIT, result.take_profit),
    ):
        if role in rows:
            order_row_update(rows[role], order)
    entry = result.entry
    if entry.filled_amount > 0 or entry.is_live:
        bracket.state = BracketState.OPEN
        bracket.opened_ms = bracket.opened_ms or entry.created_ms or int(time.time() * 1000)
        bracket.save(update_fields=["state", "opened_ms", "updated_at"])
        return "open"
    remaining = rollback(gateway, bracket, [o for o in (result.stop_loss, result.take_profit)])
    bracket.state = BracketState.BROKEN if remaining else BracketState.FAILED
    bracket.error = f"entry {entry.state} (resolved by label)" + (
        f"; left behind: {', '.join(remaining)}" if remaining else ""
    )
    bracket.save(update_fields=["state", "error", "updated_at"])
    return "not_filled"


def _exchange_now_ms(gateway: BrokerGateway, instrument: str) -> int:
    try:
        stamp = gateway.call("ticker", instrument).timestamp_ms
    except BrokerError:
        stamp = 0
    return stamp or int(time.time() * 1000)


def _adopt(gateway, position, *, run_id, account_id, policy, pct) -> Bracket:
    """Give an unclaimed position a bracket row; adopt its labelled legs or protect it."""
    side = Side.BUY if position.size > 0 else Side.SELL
    legs = [
        o
        for o in gateway.call("open_orders", position.instrument, LABEL_PREFIX)
        if o.is_live and o.reduce_only and o.direction is side.opposite
    ]
    stop = next((o for o in legs if o.order_type.startswith("stop")), None)
    distance = position.average_price * pct / 100
    spec = instrument_spec(gateway, position.instrument)
    raw_stop = (
        position.average_price - distance if side is Side.BUY else position.average_price + distance
    )
    # away from the entry: the re-placed stop never risks more than the distance asked for
    away = ROUND_FLOOR if side is Side.BUY else ROUND_CEILING
    stop_price = (raw_stop / spec.tick_size).to_integral_value(rounding=away) * spec.tick_size
    bracket = Bracket.objects.create(
        bracket_id=f"adopt{new_bracket_id()[:10]}",
        run_id=run_id,
        broker_account_id=account_id,
        broker=gateway.broker_id,
        instrument=position.instrument,
        side=str(side),
        amount=abs(position.size),
        stop_price=stop.trigger_price if stop and stop.trigger_price else stop_price,
        take_profit_price=Decimal("0"),
        linked=False,
        state=BracketState.OPEN,
        # the exchange's clock: the fills that close it are stamped by the same clock
        opened_ms=_exchange_now_ms(gateway, position.instrument),
        error="adopted: a position no bracket claimed",
    )
    Order.objects.create(
        bracket=bracket,
        role=OrderRole.ENTRY,
        label="",
        order_type="adopted",
        side=str(side),
        amount=abs(position.size),
        average_price=position.average_price,
        status="filled",
    )
    for leg in legs:
        Order.objects.create(
            bracket=bracket,
            role=OrderRole.STOP_LOSS if leg is stop else OrderRole.TAKE_PROFIT,
            label=leg.label,
            exchange_id=leg.order_id,
            order_type=leg.order_type,
            side=str(leg.direction),
            amount=leg.amount,
            trigger_price=leg.trigger_price,
            price=leg.price,
            reduce_only=True,
            status=str(leg.state),
        )
    if stop is None:
        try:
            bracket_protect(gateway, bracket, policy=policy)
        except BrokerError:
            log.exception("adopted position %s could not be protected", position.instrument)
            raise
    event_record(
        kind="position_adopted",
        message=f"Adopted a position of {position.size} {position.instrument} "
        f"(stop {'found' if stop else 'placed' if policy == 'protect' else 'none: closed'})",
        level="warning",
        context={"size": position.size, "average_price": position.average_price},
        run_id=run_id,
        bracket_id=bracket.bracket_id,
        alert=True,
    )
    return bracket
