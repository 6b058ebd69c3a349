"""The emulated bracket through a real adapter without linked orders: ccxt's own ``deribit`` class
over HTTP against the Deribit simulator, with the simulator refusing a leg."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.brokers.base import Side
from apps.brokers.ccxt_broker import CcxtBroker
from apps.brokers.simulator.testing import deribit_sim_thread
from apps.orders.brackets import BracketPlan, BracketRolledBack, bracket_place
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState

pytestmark = pytest.mark.django_db

CLIENT_ID = "ccxt-client-id-5150"
CLIENT_SECRET = "ccxt-secret-never-shown-aa11"
INSTRUMENT = "BTC-PERPETUAL"


@pytest.fixture
def sim():
    with deribit_sim_thread(
        speed=None, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    ) as running:
        yield running


@pytest.fixture
def gateway(sim):
    broker = CcxtBroker(CLIENT_ID, CLIENT_SECRET, broker_id="deribit", api_url=sim.http_url)
    assert broker.supports_linked_orders is False
    made = BrokerGateway(broker)
    made.connect()
    yield made
    made.close()


def _plan(sim) -> BracketPlan:
    last = Decimal(str(sim.call(lambda: sim.engine.last_price(INSTRUMENT))))
    return BracketPlan(
        instrument=INSTRUMENT,
        side=Side.BUY,
        amount=Decimal("1000"),
        stop_price=(last * Decimal("0.98")).quantize(Decimal("1")),
        take_profit_price=(last * Decimal("1.02")).quantize(Decimal("1")),
    )


def _live(sim) -> list:
    return sim.call(lambda: sim.engine.open_orders())


def _size(sim) -> Decimal:
    return sim.call(lambda: sim.engine.position(INSTRUMENT).size)


def test_ccxt_emulated_bracket_is_a_complete_labelled_set(sim, gateway):
    plan = _plan(sim)
    bracket = bracket_place(gateway=gateway, plan=plan)
    assert bracket.state == BracketState.OPEN and bracket.linked is False
    assert _size(sim) == plan.amount
    labels = sorted(o.label for o in _live(sim))
    assert labels == [f"tb-{plan.bracket_id}-sl", f"tb-{plan.bracket_id}-tp"]
    assert all(o.reduce_only for o in _live(sim))


@pytest.mark.parametrize("kind", ["stop", "take"])
def test_ccxt_leg_refused_rolls_back_to_nothing(sim, gateway, kind):
    sim.faults.reject_next_order(kind=kind, code=10009)
    plan = _plan(sim)
    with pytest.raises(BracketRolledBack):
        bracket_place(gateway=gateway, plan=plan)
    assert Bracket.objects.get(bracket_id=plan.bracket_id).state == BracketState.ROLLED_BACK
    assert _live(sim) == []
    assert _size(sim) == 0
