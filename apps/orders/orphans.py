"""Orphan orders: a stop or target of ours whose bracket has no live entry and no position.

A stop left behind is not harmless: when it triggers it opens a position nobody watches (the
original system's users paid fees on exactly that). ``find_orphans`` reads the exchange, not our
rows: an order is ours when its label names a bracket (``tb-<id>-sl|tp``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from apps.brokers.base import LABEL_PREFIX, BrokerError, bracket_id_of_label
from apps.brokers.base import Order as BrokerOrder
from apps.monitoring import metrics
from apps.monitoring.events import event_record
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, Order, OrderStatus

log = logging.getLogger("tradebaas.orphans")

# A bracket in one of these states has nothing left to protect: its legs are orphans even
# if some other position happens to be open on the instrument.
FINISHED = (BracketState.CLOSED, BracketState.FAILED, BracketState.ROLLED_BACK)


def find_orphans(
    gateway: BrokerGateway, *, orders: list[BrokerOrder] | None = None
) -> list[BrokerOrder]:
    """Our stops and targets whose bracket has no live entry or position. ``orders`` (our open
    orders, ``open_orders(None, LABEL_PREFIX)``): as the caller just read them, else read
    here. Positions (every currency) are read only when some of those orders are legs."""
    if orders is None:
        orders = gateway.call("open_orders", None, LABEL_PREFIX)
    orders = [o for o in orders if o.is_live]
    if not orders:
        return []
    by_bracket: dict[str, list[BrokerOrder]] = defaultdict(list)
    for order in orders:
        bracket_id = bracket_id_of_label(order.label)
        if bracket_id:
            by_bracket[bracket_id].append(order)
    if not by_bracket:
        return []
    held = {p.instrument for p in gateway.call("positions") if p.size != 0}
    finished = set(
        Bracket.objects.filter(bracket_id__in=by_bracket, state__in=FINISHED).values_list(
            "bracket_id", flat=True
        )
    )
    orphans: list[BrokerOrder] = []
    for bracket_id, group in by_bracket.items():
        if any(o.label.endswith("-entry") for o in group):
            continue  # the entry is live: its legs wait for it
        legs = [o for o in group if o.label.endswith(("-sl", "-tp"))]
        if bracket_id in finished or not any(o.instrument in held for o in legs):
            orphans += legs
    return orphans


def orphans_cancel(
    gateway: BrokerGateway, orders: list[BrokerOrder], *, run_id: int | None = None
) -> dict[str, list[str]]:
    """Cancel ``orders``, verify each, record what happened (event + alert). Returns
    ``{"cancelled": [...], "failed": [...]}``."""
    cancelled: list[str] = []
    failed: list[str] = []
    for order in orders:
        name = f"{order.label}:{order.order_id}"
        try:
            gateway.call("cancel", order.order_id)
            after = gateway.call("order_state", order.order_id)
        except BrokerError as exc:
            log.error("orphan %s: cancel failed: %s", name, exc)
            failed.append(name)
            continue
        if after.is_live:
            failed.append(name)
            continue
        cancelled.append(name)
        Order.objects.filter(exchange_id=order.order_id).update(status=OrderStatus.CANCELLED)
    if cancelled:
        metrics.ORPHANS.labels(action="cancelled").inc(len(cancelled))
        event_record(
            kind="orphan_cancelled",
            message=f"Cancelled {len(cancelled)} orphan order(s): {', '.join(cancelled)}",
            level="warning",
            context={"cancelled": cancelled},
            run_id=run_id,
            alert=True,
        )
    if failed:
        metrics.ORPHANS.labels(action="cancel_failed").inc(len(failed))
        event_record(
            kind="rollback_failed",
            message=f"Orphan order(s) NOT cancelled: {', '.join(failed)}",
            level="critical",
            context={"failed": failed},
            run_id=run_id,
            alert=True,
        )
    return {"cancelled": cancelled, "failed": failed}


def orphan_sweep_once(
    gateway: BrokerGateway,
    *,
    run_id: int | None = None,
    orders: list[BrokerOrder] | None = None,
    guard: Callable[[], None] | None = None,
) -> dict[str, list[str]]:
    """Find and cancel orphans; the event says what was done (also when nothing was found).
    ``orders``: our open orders as the caller just read them (see ``find_orphans``).
    ``guard``: called before anything is cancelled (the runner's lock check)."""
    orphans = find_orphans(gateway, orders=orders)
    if not orphans:
        return {"cancelled": [], "failed": []}
    metrics.ORPHANS.labels(action="found").inc(len(orphans))
    if guard is not None:
        guard()
    return orphans_cancel(gateway, orphans, run_id=run_id)
