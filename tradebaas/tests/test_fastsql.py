"""The hot path's writes: what they store must be exactly what the ORM would have stored."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from apps.orders.models import Bracket, Order
from apps.strategies.models import RunState, RunTransition, StrategyRun
from tradebaas.fastsql import (
    GuardedUpdate,
    Insert,
    Update,
    _write_all_generic,
    _write_guarded_generic,
    insert_rows,
    write_all,
    write_guarded,
)

pytestmark = pytest.mark.django_db


def bracket(bracket_id: str = "b1") -> Bracket:
    return Bracket(
        bracket_id=bracket_id,
        run_id=7,
        broker="deribit",
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=Decimal("120"),
        signal_price=Decimal("50000.5"),
        stop_price=Decimal("49500"),
        take_profit_price=Decimal("51000"),
        linked=True,
        state="placing",
        risk_settings={"mode": "percent", "value": "1.5"},
        sizing={"equity": "1.25"},
        signal={"reason": "cross", "nested": [1, "two", None]},
    )


def orders() -> list[Order]:
    return [
        Order(role=role, label=f"tb-b1-{role}", order_type=kind, side=side, amount=Decimal("120"))
        for role, kind, side in (
            ("entry", "market", "buy"),
            ("sl", "stop_market", "sell"),
            ("tp", "take_limit", "sell"),
        )
    ]


def as_stored(obj) -> dict:
    row = type(obj).objects.filter(pk=obj.pk).values().get()
    return {k: v for k, v in row.items() if k not in ("id", "created_at", "updated_at")}


def test_insert_rows_stores_what_the_orm_stores():
    fast = bracket("fast")
    insert_rows([fast])
    slow = bracket("slow")
    slow.save()
    assert fast.pk is not None and not fast._state.adding
    stored, expected = as_stored(fast), as_stored(slow)
    assert stored.pop("bracket_id") == "fast" and expected.pop("bracket_id") == "slow"
    assert stored == expected
    fresh = Bracket.objects.get(pk=fast.pk)
    assert fresh.created_at is not None and fresh.updated_at is not None  # auto_now filled
    assert fresh.signal == {"reason": "cross", "nested": [1, "two", None]}


def test_insert_rows_refuses_saved_or_mixed_instances():
    saved = bracket("saved")
    saved.save()
    with pytest.raises(TypeError):
        insert_rows([saved])
    with pytest.raises(TypeError):
        insert_rows([bracket("x"), orders()[0]])


def run_row(state: str = RunState.ANALYZING, fence: int = 5) -> StrategyRun:
    return StrategyRun.objects.create(
        strategy="fast_test", params={}, instrument="BTC-PERPETUAL", state=state, fence=fence
    )


def guard_for(run: StrategyRun, fence: int = 5) -> GuardedUpdate:
    return GuardedUpdate(
        StrategyRun,
        set={"state": RunState.ENTERING_POSITION},
        where={"id": run.id, "state": RunState.ANALYZING, "is_active": True, "fence": fence},
    )


ENTRY_PATH = (
    ("ANALYZING", "SIGNAL_DETECTED", "signal", {"side": "buy"}),
    ("SIGNAL_DETECTED", "ENTERING_POSITION", "placing", {"bracket": "b1"}),
)
CLOSE_PATH = (
    ("POSITION_OPEN", "CLOSING", "stop_loss", {"bracket": "b1"}),
    ("CLOSING", "ANALYZING", "trade_closed", {"bracket": "b1"}),
)


def transitions(run: StrategyRun, path=ENTRY_PATH) -> list[RunTransition]:
    return [
        RunTransition(run_id=run.id, from_state=frm, to_state=to, reason=reason,
                      context=context, actor="loop")
        for frm, to, reason, context in path
    ]  # fmt: skip


# the one-statement PostgreSQL form, and the transaction other databases (SQLite) get
WRITERS = [pytest.param(write_guarded, id="one-statement"), pytest.param(_write_guarded_generic, id="generic")]  # fmt: skip


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("times", [1, 7])  # 7: the prepared statement used again
def test_write_guarded_writes_everything_linked_when_the_guard_holds(times, writer):
    for attempt in range(times):
        run = run_row()
        parent, children, rows = bracket(f"b{attempt}"), orders(), transitions(run)
        for child in children:
            child.label = f"tb-b{attempt}-{child.role}"
        assert writer(guard_for(run), rows, parent, children, link="bracket")
        run.refresh_from_db()
        assert run.state == RunState.ENTERING_POSITION
        stored = Bracket.objects.get(bracket_id=f"b{attempt}")
        assert stored.pk == parent.pk
        assert stored.amount == Decimal("120") and stored.signal_price == Decimal("50000.5")
        assert stored.risk_settings == {"mode": "percent", "value": "1.5"}
        assert [o.pk for o in stored.orders.order_by("id")] == [c.pk for c in children]
        assert [o.role for o in stored.orders.order_by("id")] == ["entry", "sl", "tp"]
        assert all(c.bracket_id == parent.pk for c in children)
        written = list(RunTransition.objects.filter(run_id=run.id).order_by("id"))
        assert [t.pk for t in written] == [r.pk for r in rows]
        assert [t.to_state for t in written] == ["SIGNAL_DETECTED", "ENTERING_POSITION"]
        assert written[0].context == {"side": "buy"}
        StrategyRun.objects.filter(pk=run.pk).update(is_active=False)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize(
    "change",
    [
        {"is_active": False},  # the trader stopped the run
        {"state": RunState.PAUSED},  # paused meanwhile
        {"fence": 6},  # another loop took the run over
    ],
)
def test_write_guarded_writes_nothing_when_the_guard_fails(change, writer):
    run = run_row()
    StrategyRun.objects.filter(pk=run.pk).update(**change)
    before = (Bracket.objects.count(), Order.objects.count(), RunTransition.objects.count())
    parent, children = bracket(), orders()
    assert not writer(guard_for(run), transitions(run), parent, children, link="bracket")
    assert parent.pk is None and all(c.pk is None for c in children)
    assert (Bracket.objects.count(), Order.objects.count(), RunTransition.objects.count()) == before
    run.refresh_from_db()
    assert run.state == change.get("state", RunState.ANALYZING)


def test_a_value_too_long_for_its_column_is_refused_not_cut():
    """As through the ORM: the database refuses it (a cast must not truncate it)."""
    from django.db import DataError, transaction

    run = run_row()
    children = orders()
    children[1].role = "stop_loss_far_too_long"  # the column holds 8 characters
    with pytest.raises(DataError), transaction.atomic():
        write_guarded(guard_for(run), transitions(run), bracket(), children, link="bracket")
    assert not Bracket.objects.exists()
    run.refresh_from_db()
    assert run.state == RunState.ANALYZING  # the statement is atomic: the UPDATE is undone too


def test_write_guarded_is_one_statement_on_postgresql(django_assert_max_num_queries):
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement form is PostgreSQL's")
    run = run_row()
    # runs on the raw connection (a prepared statement): Django sees no query at all
    with django_assert_max_num_queries(0):
        assert write_guarded(guard_for(run), transitions(run), bracket(), orders(), link="bracket")


# --- write_all: the runner's close (legs, trade, bracket closed, the run's moves) ---------------


def _write_all_generic_of(updates, inserts, guard=None, guarded=()):
    """The generic form with write_all's own preparation (the auto_now fields added)."""
    from tradebaas.fastsql import _with_auto_now

    updates = [Update(u.obj, _with_auto_now(type(u.obj), u.fields)) for u in updates]
    return _write_all_generic(updates, inserts, guard, list(guarded))


ALL_WRITERS = [pytest.param(write_all, id="one-statement"), pytest.param(_write_all_generic_of, id="generic")]  # fmt: skip


def a_trade(parent: Bracket, pnl: str = "-0.00012"):
    from datetime import UTC, datetime

    from apps.orders.models import Trade

    return Trade(
        bracket=parent, run_id=7, instrument="BTC-PERPETUAL", side="buy", amount=Decimal("120"),
        entry_price=Decimal("50000.5"), exit_price=Decimal("49500"), pnl=Decimal(pnl),
        pnl_usd=Decimal("-5.94"), fees=Decimal("0.0000036"), currency="BTC",
        opened_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        closed_at=datetime(2026, 1, 2, 3, 9, tzinfo=UTC), duration_seconds=Decimal("300.5"),
        exit_reason="stop_loss", risk_settings={"mode": "percent"}, fill_ids=["f1", "f2"],
    )  # fmt: skip


def closing_guard(run: StrategyRun) -> GuardedUpdate:
    return GuardedUpdate(
        StrategyRun,
        set={"state": RunState.ANALYZING},
        where={"id": run.id, "state": RunState.POSITION_OPEN, "is_active": True, "fence": 5},
    )


def placed(bracket_id: str = "b1") -> tuple[Bracket, list[Order]]:
    parent = bracket(bracket_id)
    parent.save()
    children = orders()
    for child in children:
        child.bracket = parent
        child.exchange_id = f"x-{child.role}"
        child.save()
    return parent, children


@pytest.mark.parametrize("writer", ALL_WRITERS)
@pytest.mark.parametrize("times", [1, 4])  # 4: the prepared statement used again
def test_write_all_writes_the_updates_the_insert_and_the_guarded_rows(times, writer):
    from apps.orders.models import Trade

    for attempt in range(times):
        Trade.objects.all().delete()
        parent, (entry, stop, target) = placed(f"b{attempt}")
        before = Order.objects.get(pk=stop.pk).updated_at
        run = run_row(state=RunState.POSITION_OPEN)
        stop.status, stop.filled_amount, stop.average_price = (
            "filled",
            Decimal("120"),
            Decimal("49500"),
        )
        target.status = "cancelled"
        parent.state = "closed"
        trade, moves = a_trade(parent), transitions(run, CLOSE_PATH)
        updates = [Update(stop, ("status", "filled_amount", "average_price")),
                   Update(target, ("status",)), Update(parent, ("state",))]  # fmt: skip
        assert writer(updates, [Insert(trade, skip_conflict=True)], closing_guard(run), moves)
        stored = Order.objects.get(pk=stop.pk)
        assert (stored.status, stored.filled_amount, stored.average_price) == (
            "filled", Decimal("120"), Decimal("49500"))  # fmt: skip
        assert stored.updated_at > before  # auto_now, as save(update_fields=...) sets it
        assert Order.objects.get(pk=target.pk).status == "cancelled"
        assert Order.objects.get(pk=entry.pk).status == entry.status  # not in the updates
        assert Bracket.objects.get(pk=parent.pk).state == "closed"
        assert trade.pk is not None and not trade._state.adding
        expected = a_trade(parent)
        expected.bracket = Bracket.objects.create(bracket_id=f"orm{attempt}", broker="deribit",
            instrument="BTC-PERPETUAL", side="buy", amount=1, stop_price=1, take_profit_price=2)  # fmt: skip
        expected.save()
        stored, wanted = as_stored(trade), as_stored(expected)
        assert stored.pop("bracket_id") == parent.pk and wanted.pop("bracket_id") != parent.pk
        assert stored == wanted  # what the ORM stores
        run.refresh_from_db()
        assert run.state == RunState.ANALYZING
        written = list(RunTransition.objects.filter(run_id=run.id).order_by("id"))
        assert [t.pk for t in written] == [m.pk for m in moves]
        assert [t.to_state for t in written] == ["CLOSING", "ANALYZING"]
        StrategyRun.objects.filter(pk=run.pk).update(is_active=False)


@pytest.mark.parametrize("writer", ALL_WRITERS)
def test_write_all_keeps_the_trade_when_the_guard_fails(writer):
    """A run stopped during the close: the trade and the bracket's rows are written all the same;
    the run's moves are not."""
    from apps.orders.models import Trade

    parent, (_, stop, _) = placed()
    run = run_row(state=RunState.POSITION_OPEN)
    StrategyRun.objects.filter(pk=run.pk).update(is_active=False)
    stop.status = "filled"
    trade, moves = a_trade(parent), transitions(run, CLOSE_PATH)
    held = writer([Update(stop, ("status",))], [Insert(trade)], closing_guard(run), moves)
    assert held is False
    assert all(m.pk is None for m in moves)
    assert not RunTransition.objects.filter(run_id=run.id).exists()
    assert Trade.objects.get(bracket=parent).pk == trade.pk
    assert Order.objects.get(pk=stop.pk).status == "filled"


@pytest.mark.parametrize("writer", ALL_WRITERS)
def test_write_all_skips_a_trade_recorded_already(writer):
    """``skip_conflict``: the bracket's trade exists (recorded by someone else): nothing is
    inserted, the pk stays None, the other writes are made."""
    from apps.orders.models import Trade

    parent, _ = placed()
    first = a_trade(parent, pnl="0.5")
    first.save()
    second = a_trade(parent, pnl="-1")
    parent.state = "closed"
    assert writer([Update(parent, ("state",))], [Insert(second, skip_conflict=True)])
    assert second.pk is None
    assert Trade.objects.get(bracket=parent).pnl == Decimal("0.5")
    assert Bracket.objects.get(pk=parent.pk).state == "closed"


def test_write_all_is_one_statement_on_postgresql(django_assert_max_num_queries):
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement form is PostgreSQL's")
    parent, (_, stop, _) = placed()
    run = run_row(state=RunState.POSITION_OPEN)
    stop.status = "filled"
    with django_assert_max_num_queries(0):  # on the raw connection: Django sees no query
        assert write_all(
            [Update(stop, ("status",))], [Insert(a_trade(parent))], closing_guard(run),
            transitions(run, CLOSE_PATH),
        )  # fmt: skip
