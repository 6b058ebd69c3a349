"""THE bracket service: every bracket (live, paper, any broker) is placed by ``bracket_place``.

Guarantee: a complete set (entry + reduce-only stop + take-profit, each labelled with the
bracket) or nothing. Order of work:

1. Pre-flight: orphan orders on the account (a stop/target whose bracket has no live entry or
   position) block the placement (``OrphansDetected``, code ORPHANS_DETECTED); so does a
   position already open on the instrument (``PositionExists``: never a second entry).
2. Intent: the Bracket and its three Order rows are written BEFORE any request, so a crash
   between request and answer leaves labels to look up. The runner writes them ahead, while it
   waits for the candle (an intent ARMED: apps/orders/armed.py); the plan's values then go in
   with the answer.
3. Placement. Brokers with linked orders (Deribit OTOCO, paper): ONE request. A lost answer
   (``OrderOutcomeUnknown``, a dropped socket) is resolved by label before anything else, and
   the bracket is never sent twice. Brokers without: entry, confirm it, reduce-only stop,
   verify it names the bracket, take-profit, verify; on ANY failure cancel what was placed
   (close the position if the entry filled) and verify that nothing remains. Something left
   behind is a critical alert naming the orders (``BracketBroken``).
4. Outcome: rows updated with exchange ids and states.

``guard`` is called right before every order request (the runner passes its lock check); if
it raises, nothing more is sent and what was placed is rolled back.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction

from apps.brokers.base import (
    BracketRequest,
    BracketResult,
    BrokerError,
    ConnectionLost,
    InstrumentSpec,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderState,
    Side,
    bracket_labels,
)
from apps.brokers.base import Order as BrokerOrder
from apps.monitoring import metrics
from apps.monitoring.events import event_record
from apps.orders.armed import ArmedIntent, armed_forget
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, Order, OrderRole, OrderStatus
from tradebaas.fastsql import GuardedUpdate, apply_guarded, insert_rows, write_guarded

log = logging.getLogger("tradebaas.brackets")

Guard = Callable[[], None]
# (the armed intent's mark key, now in ms) -> fired (see RunnerLock.fire)
Fire = Callable[[str, int], bool]


def new_bracket_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class BracketPlan:
    instrument: str
    side: Side
    amount: Decimal
    stop_price: Decimal
    take_profit_price: Decimal
    signal_price: Decimal | None = None
    entry_type: str = "market"
    entry_price: Decimal | None = None
    run_id: int | None = None
    account_id: int | None = None
    risk_settings: dict[str, Any] = field(default_factory=dict)
    sizing: dict[str, Any] = field(default_factory=dict)
    signal: dict[str, Any] = field(default_factory=dict)
    bracket_id: str = field(default_factory=new_bracket_id)

    def request(self, valid_from_ms: int | None = None) -> BracketRequest:
        return BracketRequest(
            valid_from_ms=valid_from_ms,
            bracket_id=self.bracket_id,
            instrument=self.instrument,
            side=self.side,
            amount=self.amount,
            stop_price=self.stop_price,
            take_profit_price=self.take_profit_price,
            entry_type=self.entry_type,
            entry_price=self.entry_price,
        )


class BracketError(Exception):
    code = "BRACKET_ERROR"

    def __init__(
        self, message: str, *, bracket_id: str | None = None, orders: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.bracket_id = bracket_id
        self.orders = orders or []

    def context(self) -> dict[str, Any]:
        return {"code": self.code, "bracket_id": self.bracket_id, "orders": self.orders}


class OrphansDetected(BracketError):
    code = "ORPHANS_DETECTED"


class PositionExists(BracketError):
    code = "POSITION_EXISTS"


class IntentRefused(BracketError):
    """The intent's condition did not hold (the run was stopped or moved on): nothing was
    written and nothing was sent."""

    code = "INTENT_REFUSED"


class IntentCondition:
    """Writes that go with a bracket's rows or not at all: ``guard`` must match its row, and
    ``rows`` are inserted with the intent, or with the answer for an intent armed ahead (the
    runner: its run still active, owned by its lock's fence and in the state it left; the
    run's transition rows).

    ``made`` is what ``build`` returns (anything with ``guard`` and ``rows``: the runner's
    ``RunPath``), built when the placement first needs it: with an intent armed ahead, once
    the exchange has answered, so none of it is built on the way from the candle to the
    request. The caller checks before placing that it can be built (a refusal comes before
    anything is sent)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self.written: list[bool] = []  # whether the guard held, once tried

    @functools.cached_property
    def made(self) -> Any:
        return self._build()

    @property
    def guard(self) -> GuardedUpdate:
        return self.made.guard

    @property
    def rows(self) -> list[Any]:
        return self.made.rows

    @property
    def held(self) -> bool | None:
        """True: written with the bracket; False: the guard did not hold; None: not tried."""
        return self.written[-1] if self.written else None


class BracketRefused(BracketError):
    """The exchange refused: nothing was placed."""

    code = "BRACKET_REFUSED"


class BracketRolledBack(BracketError):
    """A leg failed; everything placed was cancelled and verified gone."""

    code = "BRACKET_ROLLED_BACK"


class BracketBroken(BracketError):
    """A leg failed and the rollback left orders or a position behind (critical alert sent)."""

    code = "BRACKET_BROKEN"


class BracketUnknown(BracketError):
    """The outcome is unknown and could not be resolved now (connection): resolve on reconnect."""

    code = "BRACKET_UNKNOWN"


# --- helpers -----------------------------------------------------------------------------------


def instrument_spec(gateway: BrokerGateway, name: str) -> InstrumentSpec:
    cache: dict[str, InstrumentSpec] = gateway.__dict__.setdefault("_spec_cache", {})
    if name not in cache:
        cache[name] = gateway.call("instrument", name)
    return cache[name]


def _status(order: BrokerOrder) -> str:
    return {
        OrderState.OPEN: OrderStatus.OPEN,
        OrderState.FILLED: OrderStatus.FILLED,
        OrderState.REJECTED: OrderStatus.REJECTED,
        OrderState.CANCELLED: OrderStatus.CANCELLED,
        OrderState.UNTRIGGERED: OrderStatus.UNTRIGGERED,
        OrderState.TRIGGERED: OrderStatus.TRIGGERED,
    }[order.state]


ORDER_ROW_FIELDS = ("exchange_id", "status", "filled_amount", "average_price")  # from the exchange


def order_row_update(row: Order, order: BrokerOrder, *, save: bool = True) -> None:
    row.exchange_id = order.order_id
    row.status = _status(order)
    row.filled_amount = order.filled_amount
    row.average_price = order.average_price or None
    if not save:
        return
    row.save(update_fields=[*ORDER_ROW_FIELDS, "updated_at"])


def _set_state(bracket: Bracket, state: str, error: str = "") -> None:
    bracket.state = state
    fields = ["state", "updated_at"]
    if error:
        bracket.error = error[:2000]
        fields.append("error")
    bracket.save(update_fields=fields)


def _intent_rows(
    plan: BracketPlan, gateway: BrokerGateway, armed: ArmedIntent | None = None
) -> tuple[Bracket, dict[str, Order]]:
    """The Bracket and Order instances of ``plan``'s intent (not written here): new ones, or
    ``armed``'s saved rows with the plan filled in."""
    entry_label, stop_label, tp_label = bracket_labels(plan.bracket_id)
    status = OrderStatus.SENT if gateway.supports_linked_orders else OrderStatus.INTENT
    exit_side = plan.side.opposite
    bracket = armed.bracket if armed is not None else Bracket(bracket_id=plan.bracket_id)
    _assign(
        bracket,
        run_id=plan.run_id,
        broker_account_id=plan.account_id,
        broker=gateway.broker_id,
        instrument=plan.instrument,
        side=str(plan.side),
        amount=plan.amount,
        signal_price=plan.signal_price,
        stop_price=plan.stop_price,
        take_profit_price=plan.take_profit_price,
        linked=gateway.supports_linked_orders,
        state=BracketState.PLACING,
        risk_settings=plan.risk_settings,
        sizing=plan.sizing,
        signal=plan.signal,
    )
    legs = {
        OrderRole.ENTRY: dict(
            label=entry_label,
            order_type=plan.entry_type,
            side=str(plan.side),
            price=plan.entry_price,
            trigger_price=None,
            reduce_only=False,
        ),
        OrderRole.STOP_LOSS: dict(
            label=stop_label,
            order_type="stop_market",
            side=str(exit_side),
            price=None,
            trigger_price=plan.stop_price,
            reduce_only=True,
        ),
        OrderRole.TAKE_PROFIT: dict(
            label=tp_label,
            order_type="take_limit",
            side=str(exit_side),
            price=plan.take_profit_price,
            trigger_price=plan.take_profit_price,
            reduce_only=True,
        ),
    }
    rows: dict[str, Order] = {}
    for role, values in legs.items():
        row = armed.rows[role] if armed is not None else Order(bracket=bracket, role=role)
        _assign(row, amount=plan.amount, status=status, **values)
        rows[role] = row
    return bracket, rows


def _assign(obj: Any, **values: Any) -> None:
    for name, value in values.items():
        setattr(obj, name, value)


def _write_intent(
    plan: BracketPlan,
    gateway: BrokerGateway,
    condition: IntentCondition | None = None,
) -> tuple[Bracket, dict[str, Order]]:
    """Bracket and order rows before anything is sent. A linked set goes out in one request
    right after this, so its rows say SENT at once (the crash-safe side: look them up).

    One statement on PostgreSQL, with the ``condition``'s writes (tradebaas/fastsql.py)."""
    bracket, rows = _intent_rows(plan, gateway)
    orders = list(rows.values())
    if condition is None:
        with transaction.atomic():
            insert_rows([bracket])
            for order in orders:
                order.bracket_id = bracket.pk
            insert_rows(orders)
        return bracket, rows
    written = write_guarded(condition.guard, condition.rows, bracket, orders, link="bracket")
    condition.written.append(written)
    if not written:
        raise IntentRefused(
            f"bracket {plan.bracket_id}: not written, not sent (the condition no longer holds)",
            bracket_id=plan.bracket_id,
        )
    return bracket, rows


def _materialize(
    bracket: Bracket,
    rows: dict[str, Order],
    condition: IntentCondition | None,
    state: str,
    *,
    error: str = "",
    status: str | None = OrderStatus.SENT,
) -> None:
    """An armed intent, once its request went out: the plan's values and ``state`` on its
    rows, with the ``condition``'s writes if its guard still holds (one transaction)."""
    with transaction.atomic():
        if condition is not None:
            condition.written.append(apply_guarded(condition.guard, condition.rows))
        bracket.state = state
        bracket.error = error[:2000]
        bracket.save()
        for row in rows.values():
            if status is not None:  # None: the rows carry the answer's states
                row.status = status
            row.save()


def _legs_of(result: BracketResult) -> tuple[tuple[str, BrokerOrder], ...]:
    return (
        (OrderRole.ENTRY, result.entry),
        (OrderRole.STOP_LOSS, result.stop_loss),
        (OrderRole.TAKE_PROFIT, result.take_profit),
    )


def _outcome(bracket: Bracket, outcome: str, **context: Any) -> None:
    metrics.BRACKETS.labels(outcome=outcome).inc()
    level = {"opened": "info", "refused": "warning", "rolled_back": "error"}.get(outcome, "error")
    kind = {"opened": "bracket_opened", "broken": "rollback_failed"}.get(
        outcome, f"bracket_{outcome}"
    )
    event_record(
        kind=kind,
        message=f"Bracket {bracket.bracket_id} {outcome.replace('_', ' ')}: "
        f"{bracket.side} {bracket.amount} {bracket.instrument}"
        + (f" ({context['error']})" if context.get("error") else "")
        + (
            f"; LEFT ON THE EXCHANGE: {', '.join(context['remaining'])}"
            if context.get("remaining")
            else ""
        ),
        level="critical" if outcome == "broken" else level,
        context={"stop": bracket.stop_price, "take_profit": bracket.take_profit_price, **context},
        run_id=bracket.run_id,
        bracket_id=bracket.bracket_id,
        alert=outcome in ("broken", "rolled_back", "opened"),
    )


# --- the service -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountCheck:
    """What the pre-flight found on the account: orphan orders, and positions held on the
    instrument. ``clear`` when a bracket may go out."""

    instrument: str
    orphans: tuple[BrokerOrder, ...] = ()
    held: tuple[Decimal, ...] = ()  # sizes of positions open on the instrument

    @property
    def clear(self) -> bool:
        return not self.orphans and not self.held


def account_check(
    gateway: BrokerGateway,
    instrument: str,
    *,
    orders: list[BrokerOrder] | None = None,
    positions: list[Any] | None = None,
) -> AccountCheck:
    """Read the account for the pre-flight (the exchange, not our rows). ``orders`` (our open
    orders) and ``positions`` (the instrument's settlement currency's): as the caller just read
    them, else read here."""
    from apps.orders.orphans import find_orphans

    orphans = find_orphans(gateway, orders=orders)
    if positions is None:
        spec = instrument_spec(gateway, instrument)
        positions = gateway.call("positions", spec.settlement_currency)
    held = [p.size for p in positions if p.instrument == instrument and p.size != 0]
    return AccountCheck(instrument=instrument, orphans=tuple(orphans), held=tuple(held))


def preflight(gateway: BrokerGateway, plan: BracketPlan, check: AccountCheck | None = None) -> None:
    """Orphans block; a position already open on the instrument blocks (no second entry).

    ``check``: a pre-flight the caller read earlier and knows to be current (the runner keeps
    one while it waits for a candle and drops it on any account event from the broker's push
    stream; see ``apps.strategies.runner.entry``). Without one, or for another instrument, the
    account is read now.
    """
    if check is None or check.instrument != plan.instrument:
        check = account_check(gateway, plan.instrument)
    if check.orphans:
        ids = [f"{o.label}:{o.order_id}" for o in check.orphans]
        event_record(
            kind="orphans_detected",
            message=f"Placement blocked: {len(ids)} orphan order(s) on the account: "
            + ", ".join(ids),
            level="error",
            context={"orders": ids},
            run_id=plan.run_id,
            alert=True,
        )
        raise OrphansDetected("orphan orders on the account block the placement", orders=ids)
    if check.held:
        raise PositionExists(
            f"a position of {check.held[0]} is already open on {plan.instrument}",
            orders=[],
        )


def bracket_place(
    *,
    gateway: BrokerGateway,
    plan: BracketPlan,
    guard: Guard | None = None,
    check: AccountCheck | None = None,
    condition: IntentCondition | None = None,
    armed: ArmedIntent | None = None,
    fire: Fire | None = None,
    fired_ms: int | None = None,
) -> Bracket:
    """Place ``plan`` as one complete set or nothing. Returns the OPEN Bracket row.

    ``check``: a current pre-flight read by the caller (see ``preflight``). ``condition``:
    writes that go with the intent or not at all (the runner's move to ENTERING_POSITION);
    when its guard matches nothing, ``IntentRefused`` is raised and nothing was written or
    sent.

    ``armed``: the intent written ahead (apps/orders/armed.py; linked brokers, ``plan`` made
    with its bracket id). ``fire`` replaces ``guard`` for it: the lock check that also marks
    the intent sent. The plan's values and the ``condition`` are then written once the answer
    is in; ``condition.held`` says whether the guard still held (a run stopped while the
    request was in flight: the bracket is recorded all the same, the run's moves are not).
    ``fired_ms``: the time ``fire`` marks the intent fired with, when it was sent ahead
    (RunnerLock.fire_ahead); the request is valid from then. Default: now.

    Raises OrphansDetected, PositionExists, BracketRefused (nothing placed), BracketRolledBack,
    BracketBroken (critical alert sent), BracketUnknown (resolve later by label); a guard's
    exception (lost lock) propagates after the rollback.
    """
    guard = guard or (lambda: None)
    preflight(gateway, plan, check)
    if armed is not None:
        if not gateway.supports_linked_orders or armed.bracket_id != plan.bracket_id:
            raise ValueError("an armed intent serves the linked bracket made with its id")
        bracket, rows = _intent_rows(plan, gateway, armed)
        if fired_ms is None:
            fired_ms = int(time.time() * 1000)
        if (fire or _fire_refused)(armed.key, fired_ms):  # the lock is ours, it was armed
            record = _Materialize(condition)
            return _place_linked(gateway, plan, bracket, rows, record, valid_from_ms=fired_ms)
        armed_forget(armed.bracket_id, armed.bracket.pk)  # its mark was lost: written now
    bracket, rows = _write_intent(plan, gateway, condition)
    if gateway.supports_linked_orders:
        return _place_linked(gateway, plan, bracket, rows, _Written(guard))
    return _place_emulated(gateway, plan, bracket, rows, guard)


def _fire_refused(_key: str, _at_ms: int) -> bool:
    return False


class _Written:
    """A linked bracket whose intent rows were written before the request (the usual way)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def before_send(self, bracket: Bracket) -> None:
        try:
            self.guard()  # right before the request
        except BaseException as exc:
            Order.objects.filter(bracket=bracket).update(status=OrderStatus.NOT_PLACED)
            _set_state(bracket, BracketState.FAILED, f"not sent: {type(exc).__name__}: {exc}")
            raise

    def answered(self, bracket: Bracket, rows: dict[str, Order], result: BracketResult) -> bool:
        return False  # the legs' rows are updated from the answer by _accept_linked

    def unknown(self, bracket: Bracket, rows: dict[str, Order], error: str) -> None:
        _set_state(bracket, BracketState.UNKNOWN, error)

    def refused(self, bracket: Bracket, rows: dict[str, Order], error: str) -> None:
        Order.objects.filter(bracket=bracket).update(status=OrderStatus.NOT_PLACED)
        _set_state(bracket, BracketState.FAILED, error)


class _Materialize:
    """A linked bracket sent with an armed intent: its rows get the plan once answered."""

    def __init__(self, condition: IntentCondition | None) -> None:
        self.condition = condition

    def before_send(self, bracket: Bracket) -> None:
        pass  # fired already (the lock check)

    def answered(self, bracket: Bracket, rows: dict[str, Order], result: BracketResult) -> bool:
        """The plan and the answer's legs written together. True: the legs' rows are saved."""
        for role, order in _legs_of(result):
            order_row_update(rows[role], order, save=False)
        _materialize(bracket, rows, self.condition, BracketState.PLACING, status=None)
        return True

    def unknown(self, bracket: Bracket, rows: dict[str, Order], error: str) -> None:
        _materialize(bracket, rows, self.condition, BracketState.UNKNOWN, error=error)

    def refused(self, bracket: Bracket, rows: dict[str, Order], error: str) -> None:
        _materialize(
            bracket,
            rows,
            self.condition,
            BracketState.FAILED,
            error=error,
            status=OrderStatus.NOT_PLACED,
        )


def _place_linked(
    gateway: BrokerGateway,
    plan: BracketPlan,
    bracket: Bracket,
    rows: dict[str, Order],
    record: _Written | _Materialize,
    *,
    valid_from_ms: int | None = None,
) -> Bracket:
    request = plan.request(valid_from_ms)
    record.before_send(bracket)
    rows_saved = False  # the legs' rows already hold the answer
    try:
        result: BracketResult | None = gateway.place_bracket(request)
        acked = result.acked_at or time.perf_counter()
    except (OrderOutcomeUnknown, ConnectionLost, TimeoutError) as exc:
        record.unknown(bracket, rows, f"outcome unknown: {exc}")
        log.warning("bracket %s: outcome unknown (%s); resolving by label", plan.bracket_id, exc)
        result = resolve_unknown(gateway, bracket)
        acked = time.perf_counter()
        if result is None:
            raise BracketRefused(
                f"bracket {plan.bracket_id} was not placed ({exc})", bracket_id=plan.bracket_id
            ) from exc
    except BrokerError as exc:
        record.refused(bracket, rows, str(exc))
        _outcome(bracket, "refused", error=str(exc))
        raise BracketRefused(
            f"bracket {plan.bracket_id} refused: {exc}", bracket_id=plan.bracket_id
        ) from exc
    except BaseException as exc:  # interrupted with the request out: its outcome is unknown
        record.unknown(bracket, rows, f"interrupted: {type(exc).__name__}: {exc}")
        raise
    else:
        rows_saved = record.answered(bracket, rows, result)
    accepted = _accept_linked(gateway, bracket, rows, result, rows_saved=rows_saved)
    accepted.acked_at = acked  # when the exchange's answer arrived (perf_counter)
    return accepted


def _accept_linked(
    gateway: BrokerGateway,
    bracket: Bracket,
    rows: dict[str, Order],
    result: BracketResult,
    *,
    rows_saved: bool = False,
) -> Bracket:
    if not rows_saved:
        for role, order in _legs_of(result):
            order_row_update(rows[role], order)
    entry, stop = result.entry, result.stop_loss
    _, stop_label, _ = bracket_labels(bracket.bracket_id)
    if entry.state in (OrderState.REJECTED, OrderState.CANCELLED) and entry.filled_amount == 0:
        remaining = rollback(gateway, bracket, [result.stop_loss, result.take_profit])
        _finish_failed(bracket, remaining, f"entry {entry.state}")
        raise BracketRefused(f"entry {entry.state}", bracket_id=bracket.bracket_id)
    # protected: the stop is live (or already filled), or the target already closed the position
    stop_ok = stop.label == stop_label and (
        stop.is_live
        or stop.state is OrderState.FILLED
        or result.take_profit.state is OrderState.FILLED
    )
    if not stop_ok:
        remaining = rollback(gateway, bracket, [result.entry, result.stop_loss, result.take_profit])
        error = f"stop leg not live ({stop.label} {stop.state})"
        _finish_failed(bracket, remaining, error)
        raise BracketRolledBack(error, bracket_id=bracket.bracket_id)
    bracket.opened_ms = entry.created_ms or int(time.time() * 1000)
    bracket.state = BracketState.OPEN
    bracket.save(update_fields=["opened_ms", "state", "updated_at"])
    _outcome(bracket, "opened", entry=entry.order_id, stop_id=stop.order_id)
    return bracket


def resolve_unknown(gateway: BrokerGateway, bracket: Bracket) -> BracketResult | None:
    """What became of a bracket whose answer was lost. None: nothing exists (FAILED, rows say so).

    Legs without an entry are cancelled (they would be orphans). Raises BracketUnknown when the
    broker cannot be asked now; the rows stay UNKNOWN for the reconcile after reconnect.
    """
    request = BracketRequest(
        bracket_id=bracket.bracket_id,
        instrument=bracket.instrument,
        side=Side(bracket.side),
        amount=bracket.amount,
        stop_price=bracket.stop_price,
        take_profit_price=bracket.take_profit_price,
    )
    if gateway.can_resolve_bracket:
        # the broker waits out the request's valid_until FIRST: a request still in flight could
        # otherwise appear after we concluded "not placed" (an unknown position)
        sent_at_ms = int(bracket.created_at.timestamp() * 1000) if bracket.created_at else None
        try:
            result = gateway.resolve_bracket(request, sent_at_ms=sent_at_ms)
        except (ConnectionLost, OrderOutcomeUnknown, TimeoutError) as exc:
            raise BracketUnknown(
                f"bracket {bracket.bracket_id}: outcome unknown and not resolvable now: {exc}",
                bracket_id=bracket.bracket_id,
            ) from exc
        except BrokerError as exc:  # inconsistent / incomplete: read the labels ourselves
            log.warning("bracket %s: broker could not resolve it: %s", bracket.bracket_id, exc)
            result = None
        if result is not None:
            return result
    try:
        found = _find_by_labels(gateway, bracket)
    except BrokerError as exc:
        raise BracketUnknown(
            f"bracket {bracket.bracket_id}: outcome unknown and not resolvable now: {exc}",
            bracket_id=bracket.bracket_id,
        ) from exc
    entries = found[OrderRole.ENTRY]
    legs = found[OrderRole.STOP_LOSS] + found[OrderRole.TAKE_PROFIT]
    if not entries:
        remaining = rollback(gateway, bracket, [o for o in legs if o.is_live]) if legs else []
        _finish_failed(bracket, remaining, "not placed (resolved by label)", outcome="refused")
        return None
    if len(entries) > 1:
        log.error("bracket %s has %d entries", bracket.bracket_id, len(entries))
    entry = sorted(entries, key=lambda o: (o.created_ms, o.order_id))[0]
    stop = _best(found[OrderRole.STOP_LOSS])
    take = _best(found[OrderRole.TAKE_PROFIT])
    if stop is None or take is None:
        raise BracketUnknown(
            f"bracket {bracket.bracket_id}: entry found without its legs",
            bracket_id=bracket.bracket_id,
            orders=[entry.order_id],
        )
    return BracketResult(entry=entry, stop_loss=stop, take_profit=take)


def _best(orders: list[BrokerOrder]) -> BrokerOrder | None:
    """The live one if any, else the latest."""
    live = [o for o in orders if o.is_live]
    pool = live or orders
    return max(pool, key=lambda o: (o.created_ms, o.order_id)) if pool else None


def _find_by_labels(gateway: BrokerGateway, bracket: Bracket) -> dict[str, list[BrokerOrder]]:
    spec = instrument_spec(gateway, bracket.instrument)
    labels = dict(
        zip(
            (OrderRole.ENTRY, OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT),
            bracket_labels(bracket.bracket_id),
            strict=True,
        )
    )
    return {
        role: [
            o
            for o in gateway.call("orders_by_label", label, spec.settlement_currency)
            if o.label == label
        ]
        for role, label in labels.items()
    }


def _finish_failed(
    bracket: Bracket, remaining: list[str], error: str, outcome: str = "rolled_back"
) -> None:
    for row in bracket.orders.all():
        if row.status in (OrderStatus.INTENT, OrderStatus.SENT):
            row.status = OrderStatus.NOT_PLACED
            row.save(update_fields=["status", "updated_at"])
    if remaining:
        _set_state(bracket, BracketState.BROKEN, f"{error}; left behind: {', '.join(remaining)}")
        _outcome(bracket, "broken", error=error, remaining=remaining)
        raise BracketBroken(
            f"bracket {bracket.bracket_id}: {error}; rollback left {', '.join(remaining)}",
            bracket_id=bracket.bracket_id,
            orders=remaining,
        )
    _set_state(
        bracket,
        BracketState.FAILED if outcome == "refused" else BracketState.ROLLED_BACK,
        error,
    )
    _outcome(bracket, outcome, error=error)


# --- emulated brackets (brokers without linked orders) ----------------------------------------


def _place_emulated(
    gateway: BrokerGateway,
    plan: BracketPlan,
    bracket: Bracket,
    rows: dict[str, Order],
    guard: Guard,
) -> Bracket:
    entry_label, stop_label, tp_label = bracket_labels(plan.bracket_id)
    placed: list[BrokerOrder] = []
    step = "entry"
    try:
        guard()
        entry = _send_leg(
            gateway,
            rows[OrderRole.ENTRY],
            OrderRequest(
                instrument=plan.instrument,
                side=plan.side,
                amount=plan.amount,
                order_type=plan.entry_type,
                label=entry_label,
                price=plan.entry_price,
            ),
            bracket,
        )
        if entry is None:
            _finish_failed(bracket, [], "entry not placed", outcome="refused")
            raise BracketRefused("entry not placed", bracket_id=plan.bracket_id)
        placed.append(entry)
        step = "confirm entry"
        entry = _confirm_entry(gateway, entry)
        placed[0] = entry
        order_row_update(rows[OrderRole.ENTRY], entry)
        amount = entry.filled_amount if entry.state is OrderState.FILLED else plan.amount
        legs = (
            ("stop-loss", OrderRole.STOP_LOSS, "stop_market", stop_label, None, plan.stop_price),
            (
                "take-profit",
                OrderRole.TAKE_PROFIT,
                "take_limit",
                tp_label,
                plan.take_profit_price,
                plan.take_profit_price,
            ),
        )
        for name, role, order_type, label, price, trigger_price in legs:  # stop first, always
            step = name
            guard()
            leg = _send_leg(
                gateway,
                rows[role],
                OrderRequest(
                    instrument=plan.instrument,
                    side=plan.side.opposite,
                    amount=amount,
                    order_type=order_type,
                    label=label,
                    price=price,
                    trigger_price=trigger_price,
                    trigger="mark_price",
                    reduce_only=True,
                ),
                bracket,
            )
            if leg is None:
                raise BracketError(f"{name} not placed")
            placed.append(leg)
            step = f"verify {name}"
            leg = _verify_leg(gateway, leg, label)
            order_row_update(rows[role], leg)
    except BracketRefused:
        raise
    except BaseException as exc:
        error = f"{step} failed: {exc}"
        log.error("bracket %s: %s; rolling back %d order(s)", plan.bracket_id, error, len(placed))
        remaining = rollback(gateway, bracket, placed)
        _finish_failed(bracket, remaining, error)  # raises BracketBroken when something is left
        if isinstance(exc, BracketError | BrokerError | TimeoutError):
            raise BracketRolledBack(
                f"bracket {plan.bracket_id}: {error}; everything placed was cancelled",
                bracket_id=plan.bracket_id,
                orders=[o.order_id for o in placed],
            ) from exc
        raise  # the guard's LockLost and the like: rolled back, now propagate
    acked = time.perf_counter()
    bracket.opened_ms = entry.created_ms or int(time.time() * 1000)
    bracket.state = BracketState.OPEN
    bracket.save(update_fields=["opened_ms", "state", "updated_at"])
    stop = placed[1]  # entry, stop-loss, take-profit: in the order they were placed
    _outcome(bracket, "opened", entry=entry.order_id, stop_id=stop.order_id, emulated=True)
    bracket.acked_at = acked
    return bracket


def _send_leg(
    gateway: BrokerGateway, row: Order, request: OrderRequest, bracket: Bracket
) -> BrokerOrder | None:
    """Send one order; its row is SENT before and updated after. A lost answer is looked up by
    label (never sent again); None means it does not exist (refused or never arrived)."""
    row.status = OrderStatus.SENT
    row.amount = request.amount
    row.save(update_fields=["status", "amount", "updated_at"])
    try:
        order = gateway.call("place_order", request)
    except (OrderOutcomeUnknown, ConnectionLost, TimeoutError) as exc:
        log.warning("bracket %s: %s outcome unknown (%s)", bracket.bracket_id, row.label, exc)
        spec = instrument_spec(gateway, bracket.instrument)
        found = [
            o
            for o in gateway.call("orders_by_label", row.label, spec.settlement_currency)
            if o.label == row.label
        ]
        if not found:
            row.status = OrderStatus.NOT_PLACED
            row.save(update_fields=["status", "updated_at"])
            if row.role == OrderRole.ENTRY:
                return None
            raise BracketError(f"{row.label} not placed ({exc})") from exc
        order = _best(found)
    except BrokerError as exc:
        row.status = OrderStatus.REJECTED
        row.save(update_fields=["status", "updated_at"])
        if row.role == OrderRole.ENTRY:
            _set_state(bracket, BracketState.FAILED, str(exc))
            _outcome(bracket, "refused", error=str(exc))
            raise BracketRefused(f"entry refused: {exc}", bracket_id=bracket.bracket_id) from exc
        raise
    order_row_update(row, order)
    return order


def _confirm_entry(gateway: BrokerGateway, entry: BrokerOrder, wait: float = 5.0) -> BrokerOrder:
    deadline = time.monotonic() + wait
    while True:
        current = gateway.call("order_state", entry.order_id)
        if current.state is OrderState.FILLED:
            return current
        if current.state in (OrderState.REJECTED, OrderState.CANCELLED):
            if current.filled_amount > 0:
                return current
            raise BracketError(f"entry {current.state}")
        if current.order_type != "market" and current.is_live:
            return current  # a resting limit entry is live: its legs protect what fills
        if time.monotonic() > deadline:
            raise BracketError(f"entry not filled after {wait:g} s ({current.state})")
        time.sleep(0.01)


def _verify_leg(gateway: BrokerGateway, order: BrokerOrder, label: str) -> BrokerOrder:
    current = gateway.call("order_state", order.order_id)
    if current.label != label:
        raise BracketError(f"{order.order_id} carries label {current.label!r}, not {label!r}")
    if not current.reduce_only:
        raise BracketError(f"{label} is not reduce-only")
    if not (current.is_live or current.state is OrderState.FILLED):
        raise BracketError(f"{label} is {current.state}")
    return current


# --- rollback -----------------------------------------------------------------------------------


def rollback(gateway: BrokerGateway, bracket: Bracket, placed: list[BrokerOrder]) -> list[str]:
    """Cancel every order of the bracket still live, close its position, verify nothing remains.

    Returns what remains (order ids, or ``position:<instrument>``); empty means clean.
    """
    prefix = f"tb-{bracket.bracket_id}-"
    for order in reversed(placed):
        if order.is_live:
            try:
                gateway.call("cancel", order.order_id)
            except BrokerError as exc:
                log.error(
                    "bracket %s: cancel %s failed: %s", bracket.bracket_id, order.order_id, exc
                )
    remaining: list[str] = []
    try:
        entry_filled = any(
            o.label.endswith("-entry") and o.filled_amount > 0
            for o in (gateway.call("order_state", p.order_id) for p in placed)
        )
        if entry_filled or any(o.label.endswith("-entry") for o in placed):
            spec = instrument_spec(gateway, bracket.instrument)
            held = [
                p
                for p in gateway.call("positions", spec.settlement_currency)
                if p.instrument == bracket.instrument and p.size != 0
            ]
            if held:
                gateway.call("close_position", bracket.instrument)
        for order in gateway.call("open_orders", bracket.instrument, prefix):
            try:
                gateway.call("cancel", order.order_id)
            except BrokerError:
                remaining.append(f"{order.label}:{order.order_id}")
        if not remaining:
            remaining += [
                f"{o.label}:{o.order_id}"
                for o in gateway.call("open_orders", bracket.instrument, prefix)
            ]
            spec = instrument_spec(gateway, bracket.instrument)
            remaining += [
                f"position:{p.instrument}:{p.size}"
                for p in gateway.call("positions", spec.settlement_currency)
                if p.instrument == bracket.instrument and p.size != 0
            ]
    except BrokerError as exc:
        remaining.append(f"unverified ({exc})")
        remaining += [f"{o.label}:{o.order_id}" for o in placed if o.is_live]
    for row in bracket.orders.all():
        if row.exchange_id and row.status not in (OrderStatus.FILLED,):
            row.status = OrderStatus.CANCELLED
            row.save(update_fields=["status", "updated_at"])
    return remaining
