"""Following an open bracket: the exit reason of a trade is the leg that closed it, even when that
leg fills while we are looking (between reading the orders and reading the position)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.brokers.paper import PaperBroker
from apps.orders.brackets import bracket_place
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Trade
from apps.orders.services import bracket_check, trade_record
from apps.orders.tests.faulty import FaultyPaperBroker
from apps.orders.tests.test_brackets import INSTRUMENT, plan_for

pytestmark = pytest.mark.django_db


class StopFillsWhileLooking(FaultyPaperBroker):
    """The exchange: once armed, the market gaps through the stop right before the next
    position read is answered (so, read the other way round, the orders were read before)."""

    armed_at: Decimal | None = None

    async def positions(self, currency=None):
        if self.armed_at is not None:
            self.engine.set_price(INSTRUMENT, float(self.armed_at))
            self.armed_at = None
        return await PaperBroker.positions(self, currency)


@pytest.fixture
def gateway(request):
    """A connected gateway; its exchange: ``StopFillsWhileLooking`` unless the test names
    another (``indirect`` parametrization)."""
    exchange = getattr(request, "param", StopFillsWhileLooking)
    made = BrokerGateway(exchange(linked=True, warmup=5))
    made.connect()
    yield made
    made.close()


def test_a_stop_filling_between_the_reads_is_a_stop_loss_for_the_cooldown(gateway):
    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    assert not bracket_check(gateway, bracket).closed  # open, stop live
    gateway.broker.armed_at = bracket.stop_price - 50  # a gap through the stop
    check = bracket_check(gateway, bracket)
    assert check.closed
    assert check.exit_reason == "stop_loss"  # was "closed" when the orders were read first
    trade = trade_record(gateway, bracket, exit_reason=check.exit_reason)
    assert trade is not None and trade.exit_reason == "stop_loss"
    # and the cooldown counts it
    from apps.risk.protections import ClosedTrade, ProtectionLimits, cooldown_trip

    stopped = [
        ClosedTrade(closed_at=t.closed_at, pnl=t.pnl, stopped_out=t.exit_reason == "stop_loss")
        for t in Trade.objects.all()
    ]
    assert (
        cooldown_trip(ProtectionLimits(cooldown_minutes=60), stopped, now=trade.closed_at)
        is not None
    )


def test_the_trade_takes_its_exit_reason_from_the_fills(gateway):
    """Whatever the caller believed, the fills say which leg flattened the position."""
    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    gateway.on_loop(
        lambda: gateway.broker.engine.set_price(INSTRUMENT, float(bracket.take_profit_price + 50))
    )
    trade = trade_record(gateway, bracket, exit_reason="closed")
    assert trade is not None and trade.exit_reason == "take_profit"


def test_a_close_not_by_a_leg_keeps_the_callers_reason(gateway):
    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    gateway.call("close_position", INSTRUMENT)  # by hand: an unlabelled market order
    check = bracket_check(gateway, bracket)
    assert check.closed and check.exit_reason == "closed"
    trade = trade_record(gateway, bracket, exit_reason=check.exit_reason)
    assert trade is not None and trade.exit_reason == "closed"


class LegsAnsweredFirst(FaultyPaperBroker):
    """An exchange that answers a batch out of order: the position is read after the market
    gapped through the stop, the legs' states as they were before it (what Deribit, which does
    not promise to answer a connection's requests in order, could send)."""

    gap_to: Decimal | None = None
    before: dict | None = None

    async def positions(self, currency=None):
        self.before = None
        if self.gap_to is not None:
            ids = [o.order_id for o in self.engine.open_orders()]
            self.before = {i: await PaperBroker.order_state(self, i) for i in ids}
            self.engine.set_price(INSTRUMENT, float(self.gap_to))
            self.gap_to = None
        return await PaperBroker.positions(self, currency)

    async def order_state(self, order_id):
        if self.before is not None and order_id in self.before:
            return self.before[order_id]
        return await PaperBroker.order_state(self, order_id)


def _counting(gateway, monkeypatch) -> list[str]:
    """The round trips ``gateway`` makes: "call" or "call_all"."""
    trips: list[str] = []
    call, call_all = gateway.call, gateway.call_all
    monkeypatch.setattr(gateway, "call", lambda *a, **k: trips.append("call") or call(*a, **k))
    monkeypatch.setattr(gateway, "call_all", lambda c: trips.append("call_all") or call_all(c))
    return trips


def test_a_stop_filled_is_read_in_one_round_trip_with_the_fills(gateway, monkeypatch):
    from apps.orders.services import bracket_read

    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    gateway.on_loop(
        lambda: gateway.broker.engine.set_price(INSTRUMENT, float(bracket.stop_price - 50))
    )
    trips = _counting(gateway, monkeypatch)
    check = bracket_read(gateway, bracket, together=True, when_flat=[("account_summary", ("BTC",))])
    assert trips == ["call_all"]
    assert check.closed and check.exit_reason == "stop_loss"
    assert check.fills and {f.label for f in check.fills} >= {f"tb-{bracket.bracket_id}-sl"}
    assert check.also[0].equity > 0  # the caller's read came with it


@pytest.mark.parametrize("gateway", [LegsAnsweredFirst], indirect=True)
def test_legs_answered_before_the_position_are_read_again_in_order(gateway, monkeypatch):
    """Flat with no exit leg filled is what legs read before their fill show: such an answer
    is not trusted; the position and then the legs are read again, in that order."""
    from apps.orders.services import bracket_read

    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    gateway.broker.gap_to = bracket.stop_price - 50
    trips = _counting(gateway, monkeypatch)
    check = bracket_read(gateway, bracket, together=True)
    assert trips == ["call_all", "call", "call_all"]
    assert check.closed and check.exit_reason == "stop_loss"  # not "closed": the cooldown counts it
    trade = trade_record(gateway, bracket, exit_reason=check.exit_reason, fills=check.fills)
    assert trade is not None and trade.exit_reason == "stop_loss"
