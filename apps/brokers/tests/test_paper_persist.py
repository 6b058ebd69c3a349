"""A persistent PaperBroker keeps its account in the database: a new one continues the old one.

Each broker runs behind a real BrokerGateway (its own event loop thread), as in the runner; the
store writes on its own thread, so the tests use committed transactions (transaction=True).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D

import pytest
from django.core.management import call_command
from django.db import connection

from apps.brokers.base import (
    BracketRequest,
    ConnectionLost,
    ConnectionState,
    EventKind,
    OrderRequest,
    Side,
)
from apps.brokers.models import PaperExchangeState
from apps.brokers.paper import PaperBroker
from apps.brokers.simulator.snapshot import FORMAT_VERSION, engine_snapshot
from apps.orders.gateway import BrokerGateway

pytestmark = pytest.mark.django_db(transaction=True)

BTC = "BTC-PERPETUAL"


_opened: list[BrokerGateway] = []


@pytest.fixture(autouse=True)
def _close_gateways():
    """Every gateway is closed (its broker's database connection too), even after a failure."""
    yield
    while _opened:
        _opened.pop().close()


def paper(**kwargs) -> BrokerGateway:
    kwargs.setdefault("manual", True)
    kwargs.setdefault("warmup", 20)
    gateway = BrokerGateway(PaperBroker(persist=True, **kwargs), timeout=30)
    _opened.append(gateway)
    gateway.connect()
    return gateway


def crash(gateway: BrokerGateway) -> None:
    """The process dies: no disconnect, no last write; the broker's loop just stops."""
    gateway.loop.call_soon_threadsafe(gateway.loop.stop)
    gateway._thread.join(timeout=5)
    # only the test's database connection is tidied
    gateway.loop.run_until_complete(gateway.broker._store.close())


def stored() -> PaperExchangeState:
    return PaperExchangeState.objects.get()


def bracket_request(engine, bracket_id: str = "p1") -> BracketRequest:
    """A long bracket with its stop and target 40 away: one of them fills within a few candles."""
    last = engine.ticker(BTC).last_price
    return BracketRequest(
        bracket_id=bracket_id,
        instrument=BTC,
        side=Side.BUY,
        amount=D(100),
        stop_price=last - 40,
        take_profit_price=last + 40,
        trigger="last_price",
    )


def open_bracket(gateway: BrokerGateway):
    request = gateway.on_loop(lambda: bracket_request(gateway.broker.engine))
    return gateway.call("place_bracket", request)


def leg_view(orders) -> list[tuple]:
    return sorted(
        (o.order_id, o.label, o.order_type, str(o.state), o.trigger_price, o.price, o.reduce_only)
        for o in orders
    )


def test_an_open_bracket_comes_back_in_a_new_broker_and_closes_as_it_would_have():
    old = paper()
    result = open_bracket(old)
    assert result.entry.filled_amount == 100
    assert str(result.stop_loss.state) == "untriggered"
    legs = leg_view(old.call("open_orders", BTC))
    position = old.call("positions", "BTC")
    summary = old.call("account_summary", "BTC")
    crash(old)

    new = paper()
    assert leg_view(new.call("open_orders", BTC)) == legs  # same ids, labels, triggers
    assert {o.label for o in new.call("open_orders", BTC)} == {"tb-p1-sl", "tb-p1-tp"}
    assert new.call("positions", "BTC") == position
    assert new.call("account_summary", "BTC") == summary
    assert new.call("order_state", result.entry.order_id) == result.entry
    fills = new.call("fills", BTC)
    assert fills and fills == [t.to_fill() for t in old.broker.engine.trades(BTC)]
    assert [o.order_id for o in new.call("orders_by_label", "tb-p1-entry", "BTC")] == [
        result.entry.order_id
    ]

    # the market goes on from the same candle in both: the same leg closes at the same fill
    closed_by = None
    for _ in range(600):
        old.broker.feed.step(1)  # the old engine, stepped by hand (its loop is gone)
        new.run(new.broker.step(1))
        exits = [t for t in old.broker.engine.trades(BTC) if t.label.endswith(("-sl", "-tp"))]
        if exits:
            closed_by = exits[0].label
            break
    assert closed_by is not None
    assert [f.to_fill() for f in old.broker.engine.trades(BTC)] == new.call("fills", BTC)
    assert not new.call("positions", "BTC")
    assert new.call("account_summary", "BTC") == old.broker.engine.account("BTC").to_summary()
    # and it is stored: the fill is in the row before the step returned
    trade_ids = {row[0] for row in stored().data["engine"]["trades"]}
    assert {t.trade_id for t in old.broker.engine.trades(BTC)} <= trade_ids
    new.close()


def test_each_order_request_is_stored_before_its_answer_and_an_idle_read_writes_nothing():
    gateway = paper()
    writes = stored().writes
    assert writes >= 1  # connecting stored the fresh account
    order = gateway.call(
        "place_order",
        OrderRequest(
            instrument=BTC, side=Side.BUY, amount=D(10), order_type="limit", price=D(1000)
        ),
    )
    row = stored()
    assert order.order_id in row.data["engine"]["live"]
    assert row.writes == writes + 1
    gateway.call("positions", "BTC")
    gateway.call("open_orders", BTC)
    assert stored().writes == writes + 1  # nothing moved: no write
    gateway.call("cancel", order.order_id)
    row = stored()
    assert order.order_id not in row.data["engine"]["live"]
    assert row.writes == writes + 2
    assert row.data == gateway.on_loop(
        lambda: engine_snapshot(gateway.broker.engine, gateway.broker.feed)
    )
    gateway.close()


def test_a_fill_made_by_the_price_is_stored_before_its_event_is_published():
    gateway = paper(manual=False, speed="max")
    reader = ThreadPoolExecutor(max_workers=1)

    def stored_trade_ids() -> set[str]:
        try:
            return {row[0] for row in stored().data["engine"]["trades"]}
        finally:
            connection.close()

    async def first_exit_fill() -> tuple[str, set[str]]:
        events = gateway.broker.events()  # listening before the bracket exists
        await gateway.broker.place_bracket(bracket_request(gateway.broker.engine))
        async for event in events:
            if event.kind is EventKind.FILL and event.payload.label.endswith(("-sl", "-tp")):
                # the broker's loop is held still while the row is read: the feed cannot go on
                return event.payload.trade_id, reader.submit(stored_trade_ids).result()
        raise AssertionError("the event stream ended")

    trade_id, in_the_row = gateway.run(first_exit_fill(), timeout=60)
    reader.shutdown()
    assert trade_id in in_the_row


def test_the_replay_continues_with_the_next_candle_and_the_history_is_rebuilt():
    old = paper()
    old.run(old.broker.step(7))
    last = old.broker.feed.last_closed[BTC]
    expected_next = old.broker.feed.next_open_ms()
    history = old.call("candles", BTC, 1, 0, 2**62)
    old.close()  # a clean stop writes the cursor too
    assert stored().data["feed"]["stepped"] == 27

    new = paper()
    assert new.call("candles", BTC, 1, 0, 2**62) == history  # no warm-up replay: rebuilt
    (closed,) = [c for c in new.run(new.broker.step(1)) if c.instrument == BTC]
    assert closed.candle.open_time_ms == expected_next > last.open_time_ms
    assert new.broker.engine.now_ms > last.open_time_ms
    new.close()


def test_a_corrupt_or_unknown_snapshot_is_logged_and_paper_starts_fresh(caplog):
    PaperExchangeState.objects.create(data={"format": 1, "engine": "garbage"}, format_version=1)
    with caplog.at_level(logging.ERROR, logger="apps.brokers.paper"):
        gateway = paper()
    assert "paper state not restored" in caplog.text and "corrupt snapshot" in caplog.text
    assert gateway.call("account_summary", "BTC").balance == 1
    assert stored().data["format"] == FORMAT_VERSION  # the fresh account replaced it
    gateway.close()

    PaperExchangeState.objects.update(format_version=99)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="apps.brokers.paper"):
        gateway = paper()
    assert "stored format 99" in caplog.text
    assert gateway.broker.state is ConnectionState.CONNECTED
    gateway.close()


def test_a_session_that_lost_the_account_stops_instead_of_overwriting_it():
    first = paper()
    second = paper()  # claims the account (e.g. a second process)
    second.call(
        "place_order",
        OrderRequest(instrument=BTC, side=Side.BUY, amount=D(10), order_type="limit", price=D(900)),
    )
    kept = stored().data
    with pytest.raises(ConnectionLost, match="another session"):
        first.call(
            "place_order",
            OrderRequest(instrument=BTC, side=Side.SELL, amount=D(10), order_type="market"),
        )
    assert first.broker.state is ConnectionState.ERROR
    assert stored().data == kept
    first.close()
    assert stored().data == kept  # not even at disconnect
    second.close()


def test_paper_reset_clears_the_account_and_says_what_it_dropped(capsys):
    gateway = paper()
    open_bracket(gateway)
    gateway.close()
    call_command("paper_reset")
    out = capsys.readouterr().out
    assert "Paper account reset" in out and "BTC-PERPETUAL" in out and "open orders 2" in out
    assert not PaperExchangeState.objects.exists()
    fresh = paper()
    assert not fresh.call("positions", "BTC")
    assert fresh.call("account_summary", "BTC").balance == 1
    fresh.close()
    PaperExchangeState.objects.all().delete()
    call_command("paper_reset")
    assert "No paper account was stored" in capsys.readouterr().out


def test_the_admin_shows_the_state_read_only(admin_client):
    gateway = paper()
    open_bracket(gateway)
    gateway.close()
    response = admin_client.get("/admin/brokers/paperexchangestate/1/change/")
    assert response.status_code == 200
    assert (
        b"BTC-PERPETUAL" in response.content and b"&quot;open_orders&quot;: 2" in response.content
    )
    assert b'name="_save"' not in response.content  # nothing to save
    assert admin_client.get("/admin/brokers/paperexchangestate/add/").status_code == 403
