"""DeribitBroker trading end to end against the exchange simulator over a real socket:
balance, instruments, the one-request OTOCO bracket, stop/target fills and the OCO cancel,
unknown outcomes resolved by label without a duplicate, error mapping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from apps.brokers.base import (
    BracketRequest,
    BrokerEvent,
    ConnectionState,
    EventKind,
    NotFound,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderRequest,
    OrderState,
    RetryableError,
    Side,
)
from apps.brokers.deribit import DeribitBroker
from apps.brokers.simulator.testing import RunningSim, running_deribit_sim

BTC = "BTC-PERPETUAL"
PRICE = Decimal("50000")


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    async with running_deribit_sim(balances={"BTC": Decimal("2"), "USDC": Decimal("10000")}) as s:
        s.set_price(BTC, PRICE)
        yield s


@pytest.fixture
async def broker(sim) -> AsyncIterator[DeribitBroker]:
    broker = DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url, request_timeout=3)
    await broker.connect()
    yield broker
    await broker.disconnect()


def bracket(bracket_id: str = "b1", **overrides: Any) -> BracketRequest:
    values: dict[str, Any] = dict(
        bracket_id=bracket_id,
        instrument=BTC,
        side=Side.BUY,
        amount=Decimal("100"),
        stop_price=Decimal("49000"),
        take_profit_price=Decimal("52000"),
    )
    values.update(overrides)
    return BracketRequest(**values)


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await _value(predicate()):
            await asyncio.sleep(0.02)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def collect(stream: Any, until: Callable[[list[BrokerEvent]], bool]) -> list[BrokerEvent]:
    got: list[BrokerEvent] = []
    async with asyncio.timeout(5):
        while not until(got):
            got.append(await anext(stream))
    return got


async def orders_labelled(broker: DeribitBroker, prefix: str) -> list[Any]:
    """Every order on the exchange whose label starts with ``prefix`` (any state)."""
    found = []
    for leg in ("entry", "sl", "tp"):
        found += await broker.orders_by_label(f"{prefix}-{leg}", "BTC")
    return found


async def test_balance_is_visible_after_connect(broker):
    summary = await broker.account_summary("BTC")
    assert summary.currency == "BTC"
    assert summary.balance == Decimal("2") and summary.equity == Decimal("2")
    assert summary.available_funds == Decimal("2")
    assert (await broker.account_summary("USDC")).balance == Decimal("10000")


async def test_instruments_are_read_from_the_exchange(broker):
    from apps.brokers.simulator.instruments import DEFAULT_SPECS

    specs = {spec.name: spec for spec in await broker.instruments()}
    assert set(specs) == set(DEFAULT_SPECS)
    for name, expected in DEFAULT_SPECS.items():
        got = specs[name]
        assert (got.kind, got.contract_size, got.min_amount, got.amount_step) == (
            expected.kind,
            expected.contract_size,
            expected.min_amount,
            expected.amount_step,
        )
        assert (got.tick_size, got.max_leverage, got.settlement_currency) == (
            expected.tick_size,
            expected.max_leverage,
            expected.settlement_currency,
        )
    assert await broker.instrument(BTC) == specs[BTC]
    with pytest.raises(NotFound):
        await broker.instrument("NOPE-PERPETUAL")


async def test_ticker_reads_the_price(broker):
    ticker = await broker.ticker(BTC)
    assert ticker.instrument == BTC and ticker.mark_price == PRICE


async def test_bracket_is_a_primary_plus_two_untriggered_linked_legs_with_labels(broker, sim):
    result = await broker.place_bracket(bracket("b1"))
    entry, stop, take = result.entry, result.stop_loss, result.take_profit
    assert entry.label == "tb-b1-entry" and entry.state is OrderState.FILLED
    assert entry.direction is Side.BUY and entry.filled_amount == Decimal("100")
    assert set(entry.linked_order_ids) == {stop.order_id, take.order_id}
    assert (stop.label, take.label) == ("tb-b1-sl", "tb-b1-tp")
    for leg in (stop, take):
        assert leg.state is OrderState.UNTRIGGERED
        assert leg.direction is Side.SELL and leg.reduce_only and leg.is_secondary
        assert leg.primary_order_id == entry.order_id and leg.amount == Decimal("100")
    assert stop.order_type == "stop_market" and stop.trigger_price == Decimal("49000")
    assert take.order_type == "take_limit" and take.trigger_price == Decimal("52000")
    assert take.price == Decimal("52000")
    # What the exchange stored is what the one request sent.
    raw = await broker.client.call("private/get_order_state", {"order_id": entry.order_id})
    assert raw["trigger_fill_condition"] == "incremental"
    assert raw.get("is_primary_otoco", True) is True
    raw_stop = await broker.client.call("private/get_order_state", {"order_id": stop.order_id})
    assert raw_stop["trigger"] == "mark_price"
    # The legs show among the open orders, found by the bracket's label prefix.
    legs = await broker.open_orders(BTC, label_prefix="tb-b1")
    assert {o.order_id for o in legs} == {stop.order_id, take.order_id}
    assert await broker.open_orders(label_prefix="tb-other") == []
    (position,) = await broker.positions("BTC")
    assert position.instrument == BTC and position.size == Decimal("100")


async def test_stop_fill_cancels_the_target_and_flattens(broker, sim):
    events = broker.events()
    result = await broker.place_bracket(bracket("b2"))
    sim.set_price(BTC, Decimal("48900"))
    stop = result.stop_loss
    await wait_for(lambda: _is_state(broker, result.take_profit.order_id, OrderState.CANCELLED))
    stop = await broker.order_state(stop.order_id)
    take = await broker.order_state(result.take_profit.order_id)
    assert stop.state in (OrderState.TRIGGERED, OrderState.FILLED)
    assert take.cancel_reason == "oco_other_closed"
    await wait_for(lambda: _flat(broker))
    fills = await broker.fills(BTC)
    assert [f.label for f in fills][:1] == ["tb-b2-entry"]
    assert any(f.direction is Side.SELL for f in fills)
    assert all(f.fee_currency == "BTC" and f.fee >= 0 for f in fills)
    got = await collect(
        events,
        lambda evs: any(e.kind is EventKind.FILL and e.payload.direction is Side.SELL for e in evs),
    )
    got += await collect(
        events,
        lambda evs: any(e.kind is EventKind.POSITION and e.payload.size == 0 for e in evs),
    )
    kinds = {e.kind for e in got}
    assert {EventKind.ORDER, EventKind.FILL, EventKind.POSITION} <= kinds
    orders = {e.payload.order_id: e.payload for e in got if e.kind is EventKind.ORDER}
    assert orders[result.take_profit.order_id].state is OrderState.CANCELLED
    await events.aclose()


async def test_target_fill_cancels_the_stop(broker, sim):
    result = await broker.place_bracket(bracket("b3"))
    sim.set_price(BTC, Decimal("52500"))
    await wait_for(lambda: _is_state(broker, result.stop_loss.order_id, OrderState.CANCELLED))
    stop = await broker.order_state(result.stop_loss.order_id)
    assert stop.cancel_reason == "oco_other_closed"
    await wait_for(lambda: _flat(broker))


async def test_short_bracket_has_buy_legs(broker):
    result = await broker.place_bracket(
        bracket(
            "s1", side=Side.SELL, stop_price=Decimal("51000"), take_profit_price=Decimal("48000")
        )
    )
    assert result.entry.direction is Side.SELL
    assert result.stop_loss.direction is Side.BUY and result.take_profit.direction is Side.BUY
    (position,) = await broker.positions("BTC")
    assert position.size == Decimal("-100")


async def test_cancelling_an_unfilled_limit_entry_cancels_its_legs(broker):
    result = await broker.place_bracket(
        bracket("l1", entry_type="limit", entry_price=Decimal("45000"))
    )
    assert result.entry.state is OrderState.OPEN
    cancelled = await broker.cancel(result.entry.order_id)
    assert cancelled.state is OrderState.CANCELLED
    for leg in (result.stop_loss, result.take_profit):
        after = await broker.order_state(leg.order_id)
        assert after.state is OrderState.CANCELLED and after.cancel_reason == "oto_primary_closed"
    assert await broker.open_orders(label_prefix="tb-l1") == []
    again = await broker.cancel(result.entry.order_id)  # already gone: its state, not an error
    assert again.state is OrderState.CANCELLED


async def test_timeout_during_placement_is_unknown_then_resolved_by_label_without_duplicate(sim):
    broker = DeribitBroker(
        sim.client_id, sim.client_secret, url=sim.ws_url, request_timeout=3, order_timeout=0.3
    )
    await broker.connect()
    try:
        sim.faults.delay(1000, methods=["private/buy"])
        request = bracket("t1")
        with pytest.raises(OrderOutcomeUnknown):
            await broker.place_bracket(request)
        sim.faults.reset()
        assert broker.state is ConnectionState.CONNECTED
        found = await broker.resolve_bracket(request)
        assert found is not None
        assert found.entry.label == "tb-t1-entry" and found.entry.state is OrderState.FILLED
        assert (found.stop_loss.label, found.take_profit.label) == ("tb-t1-sl", "tb-t1-tp")
        assert found.stop_loss.state is OrderState.UNTRIGGERED
        await asyncio.sleep(1.0)  # let the delayed answer arrive; it must change nothing
        placed = await orders_labelled(broker, "tb-t1")
        assert sorted(o.label for o in placed) == ["tb-t1-entry", "tb-t1-sl", "tb-t1-tp"]
        (position,) = await broker.positions("BTC")
        assert position.size == Decimal("100")  # one entry, not two
    finally:
        await broker.disconnect()


async def test_socket_dropped_after_placement_is_unknown_then_found_after_reconnect(broker, sim):
    sim.faults.drop_on_next_order(when="after")
    request = bracket("d1")
    with pytest.raises(OrderOutcomeUnknown):
        await broker.place_bracket(request)
    await wait_for(lambda: broker.state is ConnectionState.DISCONNECTED)
    await broker.connect()
    found = await broker.resolve_bracket(request)
    assert found is not None and found.entry.label == "tb-d1-entry"
    assert len(await orders_labelled(broker, "tb-d1")) == 3


async def test_socket_dropped_before_placement_resolves_to_nothing(broker, sim):
    sim.faults.drop_on_next_order(when="before")
    request = bracket("d2")
    with pytest.raises(OrderOutcomeUnknown):
        await broker.place_bracket(request)
    await wait_for(lambda: broker.state is ConnectionState.DISCONNECTED)
    await broker.connect()
    assert await broker.resolve_bracket(request) is None
    assert await broker.positions("BTC") == []


async def test_a_rejected_entry_places_nothing(broker, sim):
    sim.faults.reject_next_order(kind="primary", code=10009)
    with pytest.raises(OrderRejected) as caught:
        await broker.place_bracket(bracket("r1"))
    assert caught.value.code == 10009 and caught.value.message == "not_enough_funds"
    assert await broker.resolve_bracket(bracket("r1")) is None
    assert await broker.open_orders() == [] and await broker.positions("BTC") == []


async def test_a_stop_rejected_on_activation_shows_in_the_result(broker, sim):
    """The exchange refuses the stop when the fill activates it: the result must say so, so
    that the bracket service can see an unprotected position (it does not look complete)."""
    sim.faults.reject_next_order(kind="stop", code=10009)
    result = await broker.place_bracket(bracket("r2"))
    assert result.entry.state is OrderState.FILLED
    assert result.stop_loss.state is OrderState.REJECTED
    assert not result.take_profit.is_live


async def test_exchange_errors_map_to_typed_exceptions(broker):
    with pytest.raises(OrderRejected) as not_multiple:
        await broker.place_order(
            OrderRequest(instrument=BTC, side=Side.BUY, amount=Decimal("15"), order_type="market")
        )
    # Deribit answers -32602 "must be a multiple of contract size"; 10021 invalid_amount is
    # the same refusal under its own code.
    assert not_multiple.value.code in (-32602, 10021)
    with pytest.raises(OrderRejected) as wrong_tick:
        await broker.place_order(
            OrderRequest(
                instrument=BTC,
                side=Side.BUY,
                amount=Decimal("10"),
                order_type="limit",
                price=Decimal("45000.3"),
            )
        )
    assert wrong_tick.value.code == 10043
    with pytest.raises(NotFound):
        await broker.order_state("no-such-order")
    with pytest.raises(RetryableError) as too_late:  # valid_until passed: never executed
        await broker.client.call(
            "private/buy",
            {"instrument_name": BTC, "amount": 10, "type": "market", "valid_until": 1},
        )
    assert too_late.value.code == 13888 and await broker.positions("BTC") == []
    assert await broker.orders_by_label("tb-nothing-entry", "BTC") == []


async def test_close_position_and_fills(broker):
    order = await broker.place_order(
        OrderRequest(
            instrument=BTC, side=Side.BUY, amount=Decimal("200"), order_type="market", label="m1"
        )
    )
    assert order.state is OrderState.FILLED
    closing = await broker.close_position(BTC)
    assert closing is not None and closing.direction is Side.SELL
    assert closing.amount == Decimal("200") and closing.reduce_only
    assert await broker.positions("BTC") == []
    assert await broker.close_position(BTC) is None
    fills = await broker.fills(BTC)
    assert [f.direction for f in fills] == [Side.BUY, Side.SELL]
    assert sum(f.amount for f in fills) == Decimal("400")
    later = await broker.fills(BTC, since_ms=fills[-1].timestamp_ms + 1)
    assert later == []


async def _is_state(broker: DeribitBroker, order_id: str, state: OrderState) -> bool:
    return (await broker.order_state(order_id)).state is state


async def _flat(broker: DeribitBroker) -> bool:
    return await broker.positions("BTC") == []


def _far_limit(i: int) -> OrderRequest:
    return OrderRequest(
        instrument=BTC,
        side=Side.BUY,
        amount=Decimal("10"),
        order_type="limit",
        price=Decimal("25000"),
        label=f"rl-{i}",
    )


async def test_client_pacing_stays_under_the_exchange_rate_limit():
    limits = ((5.0, 3.0), (100.0, 100.0))
    async with running_deribit_sim(rate_limits=limits) as sim:
        sim.set_price(BTC, PRICE)
        unpaced = DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url)
        await unpaced.connect()
        with pytest.raises(RetryableError) as caught:
            for i in range(6):
                await unpaced.place_order(_far_limit(i))
        assert caught.value.code == 10028
        await wait_for(lambda: unpaced.state is ConnectionState.DISCONNECTED)
        await asyncio.sleep(1.0)  # let the exchange's bucket refill

        paced = DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url, rate_limits=limits)
        await paced.connect()
        try:
            for i in range(6):
                order = await paced.place_order(_far_limit(10 + i))
                assert order.state is OrderState.OPEN
            assert paced.state is ConnectionState.CONNECTED
        finally:
            await paced.disconnect()


async def test_after_a_restart_resolve_waits_out_the_request_then_finds_it(sim):
    """A new process (a fresh broker) knows only when the intent was recorded."""
    first = DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url, order_timeout=0.4)
    await first.connect()
    sim.faults.delay(2000, methods=["private/buy"])
    sent_at_ms = int(time.time() * 1000)
    with pytest.raises(OrderOutcomeUnknown):
        await first.place_bracket(bracket("k1"))
    await first.disconnect()  # the process dies
    sim.faults.reset()
    second = DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url, order_timeout=1.2)
    await second.connect()
    try:
        found = await second.resolve_bracket(bracket("k1"), sent_at_ms=sent_at_ms)
        assert time.time() * 1000 >= sent_at_ms + 1200  # looked only once it could not run
        assert found is not None and found.entry.label == "tb-k1-entry"
        assert found.stop_loss.is_live and found.take_profit.is_live
    finally:
        await second.disconnect()


async def test_a_partly_filled_entry_is_protected_pro_rata(broker, sim):
    """trigger_fill_condition=incremental: each fill of the entry arms its share of the legs."""
    sim.call(lambda: sim.engine.fill_cap.__setitem__(BTC, Decimal("30")))
    result = await broker.place_bracket(
        bracket("p1", entry_type="limit", entry_price=Decimal("49500"))
    )
    sim.set_price(BTC, Decimal("49500"))  # 30 of the 100 fill
    entry = await broker.order_state(result.entry.order_id)
    assert entry.state is OrderState.OPEN and entry.filled_amount == Decimal("30")
    stop = await broker.order_state(result.stop_loss.order_id)
    take = await broker.order_state(result.take_profit.order_id)
    assert stop.amount == take.amount == Decimal("30")
    assert stop.state is OrderState.UNTRIGGERED and take.state is OrderState.UNTRIGGERED
    (position,) = await broker.positions("BTC")
    assert position.size == Decimal("30")


async def test_positions_of_every_currency_come_in_one_call(sim, broker):
    """``positions()`` with no currency asks for each configured currency (at once) and returns
    the open ones of all of them; with a currency, only that currency's."""
    sim.set_price("BTC_USDC-PERPETUAL", PRICE)
    await broker.place_order(
        OrderRequest(instrument=BTC, side=Side.BUY, amount=Decimal("100"), order_type="market")
    )
    await broker.place_order(
        OrderRequest(
            instrument="BTC_USDC-PERPETUAL",
            side=Side.SELL,
            amount=Decimal("0.01"),
            order_type="market",
        )
    )
    every = {p.instrument: p.size for p in await broker.positions()}
    assert every == {BTC: Decimal("100"), "BTC_USDC-PERPETUAL": Decimal("-0.01")}
    assert [p.instrument for p in await broker.positions("USDC")] == ["BTC_USDC-PERPETUAL"]
    assert await broker.positions("ETH") == []


async def test_changes_become_events_in_order_after_the_answers_already_read(broker):
    """``user.changes`` notifications are converted on the next turn of the event loop: in the
    order they came, none lost, one that cannot be read skipped (the next still comes), and
    before a connection event heard after them."""
    events = broker.events()
    order = {"order_id": "o-1", "instrument_name": BTC, "direction": "buy", "amount": 10,
             "order_state": "open", "order_type": "limit", "price": 50000, "label": "tb-x-entry",
             "filled_amount": 0, "creation_timestamp": 1, "last_update_timestamp": 1}  # fmt: skip
    broker._on_changes({"instrument_name": BTC, "orders": [dict(order, order_id="o-1")]})
    broker._on_changes({"instrument_name": BTC, "orders": [{"amount": "not a number"}]})
    broker._on_changes({"instrument_name": BTC, "orders": [dict(order, order_id="o-2")]})
    assert broker._changes  # not converted yet: callbacks already due run first
    broker._on_connection_event(BrokerEvent(EventKind.DISCONNECTED, "test", 0))
    got = await collect(events, lambda evs: len(evs) >= 3)
    assert [e.kind for e in got] == [EventKind.ORDER, EventKind.ORDER, EventKind.DISCONNECTED]
    assert [e.payload.order_id for e in got[:2]] == ["o-1", "o-2"]
    assert not broker._changes
    await events.aclose()
