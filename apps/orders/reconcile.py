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
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from apps.brokers.base import LABEL_PREFIX, BrokerError, Side
from apps.monitoring.events import event_record
from apps.orders.brackets import (
    BracketBroken,
    BracketUnknown,
    instrument_spec,
    new_bracket_id,
    order_row_update,
    resolve_unknown,
    rollback,
)
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, Order, OrderRole
from apps.orders.orphans import orphan_sweep_once
from apps.orders.services import bracket_check, bracket_protect, trade_record

log = logging.getLogger("tradebaas.reconcile")


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
) -> ReconcileReport:
    report = ReconcileReport()
    mine = Bracket.objects.filter(broker=gateway.broker_id, broker_account_id=account_id)
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
                gateway, bracket, exit_reason=check.exit_reason, recorded_by="reconcile"
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
