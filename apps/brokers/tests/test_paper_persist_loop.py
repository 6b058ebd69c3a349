"""The whole story on paper, through the real runner loop: a run opens a position, its worker
dies without a goodbye, a new loop on a new PaperBroker finds the position and its legs where
the database kept them, and records the trade when a leg fills."""

from __future__ import annotations

import asyncio
import threading

import pytest

from apps.brokers.models import PaperExchangeState
from apps.monitoring.testing import telegram  # noqa: F401 - the fake Bot API fixture
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, Order, OrderRole, Trade
from apps.strategies.models import RunState
from apps.strategies.runner.loop import run_loop_forever
from apps.strategies.tests.runner_kit import Driver, make_run, paper_gateway

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_loop")]

BTC = "BTC-PERPETUAL"


def dies_without_goodbye(gateway: BrokerGateway) -> BrokerGateway:
    """The loop's worker is killed: when the loop lets go of the gateway, the broker's event loop
    just stops; no disconnect, so no last write (only what was stored before each answer)."""

    def killed() -> None:
        gateway.loop.call_soon_threadsafe(gateway.loop.stop)
        gateway._thread.join(timeout=5)

    gateway.close = killed
    return gateway


def bury(gateway: BrokerGateway) -> None:
    """What the dead process left in this test process: its tasks and its database connection."""
    loop = gateway.loop
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(gateway.broker._store.close())
    loop.close()


def exits(engine) -> int:
    return sum(1 for t in engine.trades() if t.label.endswith(("-sl", "-tp")))


def test_a_killed_paper_loop_comes_back_with_its_position_and_records_the_trade():
    run = make_run()
    first = dies_without_goodbye(paper_gateway(persist=True))
    stop = threading.Event()
    with Driver(first, stop, until=lambda e: bool(e.positions())) as driver:
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: first, stop=stop, max_seconds=60
        )
    assert driver.error is None and outcome == "shutdown"
    run.refresh_from_db()
    assert run.state == RunState.POSITION_OPEN
    bracket = Bracket.objects.get(state=BracketState.OPEN)
    legs = dict(
        bracket.orders.filter(role__in=(OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)).values_list(
            "role", "exchange_id"
        )
    )
    dead = first.broker.engine
    (entry_fill,) = dead.trades(BTC)
    assert {o.order_id for o in dead.open_orders(BTC)} == set(legs.values())
    bury(first)
    transitions = run.transitions.count()

    second = paper_gateway(persist=True)  # a new process: a new broker, the stored account
    stop = threading.Event()
    with Driver(second, stop, until=lambda e: exits(e) >= 1) as driver:
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: second, stop=stop, max_seconds=60
        )
    assert driver.error is None and outcome == "shutdown"
    engine = second.broker.engine
    # the reconcile found the bracket's position and legs: no adoption, no new stop, no orphan
    assert not Bracket.objects.filter(bracket_id__startswith="adopt").exists()
    assert (
        dict(
            Order.objects.filter(
                bracket=bracket, role__in=(OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)
            ).values_list("role", "exchange_id")
        )
        == legs
    )
    after = list(run.transitions.order_by("id").values_list("to_state", flat=True))[transitions:]
    assert after[:2] == ["CLOSING", "ANALYZING"]  # straight from the open position to its close
    # the trade is recorded from the fills of both lives: the entry before, the exit after
    trade = Trade.objects.get(bracket=bracket)
    exit_fill = next(t for t in engine.trades(BTC) if t.label.endswith(("-sl", "-tp")))
    assert set(trade.fill_ids) == {entry_fill.trade_id, exit_fill.trade_id}
    assert trade.exit_reason == ("stop_loss" if exit_fill.label.endswith("-sl") else "take_profit")
    assert trade.fees == entry_fill.fee + exit_fill.fee
    bracket.refresh_from_db()
    assert bracket.state == BracketState.CLOSED
    # one account across both lives: its balance counts the first life's fee too
    assert engine.trades(BTC)[0] == entry_fill
    assert engine.realized_pnl("BTC") == exit_fill.profit_loss
    assert engine.account("BTC").balance == (
        1 + exit_fill.profit_loss - sum(t.fee for t in engine.trades())
    )
    second.close()
    stored = [row[0] for row in PaperExchangeState.objects.get().data["engine"]["trades"]]
    assert stored == [t.trade_id for t in engine.trades()]
