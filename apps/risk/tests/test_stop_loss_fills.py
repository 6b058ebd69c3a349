"""A sized trade that hits its stop loses the chosen risk — measured from the exchange's own fills.

The sizer sizes a trade on the paper broker's account; the bracket goes to the simulated exchange
as one OTOCO (``PaperBroker.place_bracket``, the path the runner uses); the price moves to the
stop; the realized loss is then computed from the fills' prices, amounts and fees with Deribit's
P&L formula, and cross-checked against the account's equity change. Nothing here reads the
sizer's own risk figures.

Tolerance: the exchange rounds each fill's P&L and fee to its currency quantum (1e-10 BTC/ETH,
1e-8 USDC), so its loss may differ from the exact one by a few quanta; the sizer guarantees the
exact loss.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from apps.brokers.base import BracketRequest, Candle, Side
from apps.brokers.paper import PaperBroker
from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.instruments import CURRENCY_QUANTUM
from apps.risk.sizing import size_position
from apps.risk.tests.fills import fills_loss

D = Decimal

SCENARIOS = [
    # instrument, side, entry, stop, mode, value, include_fees
    ("BTC-PERPETUAL", Side.BUY, "50000", "49000", "percent", "5", True),
    ("BTC-PERPETUAL", Side.SELL, "50000", "51234.5", "percent", "5", False),
    ("BTC-PERPETUAL", Side.BUY, "43210.5", "42000", "fixed", "50", True),
    ("ETH-PERPETUAL", Side.SELL, "2500", "2562.35", "fixed", "50", False),
    ("BTC_USDC-PERPETUAL", Side.BUY, "50000", "49000", "percent", "5", True),
    ("BTC_USDC-PERPETUAL", Side.SELL, "50000", "51234", "fixed", "50", True),
    ("ETH_USDC-PERPETUAL", Side.BUY, "2500", "2437.65", "percent", "5", False),
    ("ETH_USDC-PERPETUAL", Side.SELL, "2500", "2562.35", "fixed", "50", False),
]


@pytest.mark.parametrize(
    ("instrument", "side", "entry", "stop", "mode", "value", "include_fees"), SCENARIOS
)
async def test_a_stopped_trade_loses_the_chosen_risk_by_the_exchanges_fills(
    instrument, side, entry, stop, mode, value, include_fees
):
    entry, stop = D(entry), D(stop)
    engine = ExchangeEngine(now_ms=0)
    scale = {instrument: 1.0}
    broker = PaperBroker(
        candles=[Candle(0, float(entry), float(entry), float(entry), float(entry))],
        instruments=scale,
        engine=engine,
        manual=True,
        warmup=0,
        rebase_time=False,
    )
    await broker.connect()
    spec = await broker.instrument(instrument)
    currency = spec.settlement_currency
    engine.set_price(instrument, float(entry))
    before = await broker.account_summary(currency)

    sized = size_position(
        spec=spec,
        side=side,
        entry=entry,
        stop=stop,
        equity=before.equity,
        available_funds=before.available_funds,
        mode=mode,
        value=D(value),
        leverage_cap=D(50),
        include_fees=include_fees,
    )
    distance = abs(entry - stop)
    take_profit = entry + 3 * distance if side is Side.BUY else entry - 3 * distance
    placed = await broker.place_bracket(
        BracketRequest(
            bracket_id="risk1",
            instrument=instrument,
            side=side,
            amount=sized.amount,
            stop_price=stop,
            take_profit_price=take_profit,
        )
    )
    assert placed.entry.filled_amount == sized.amount
    engine.move_price(instrument, float(stop))

    fills = await broker.fills(instrument)
    assert [f.direction for f in fills] == [side, side.opposite], "entry, then the stop"
    assert fills[1].price == stop and fills[1].amount == sized.amount
    assert not [p for p in await broker.positions(currency) if p.size], "flat after the stop"
    after = await broker.account_summary(currency)

    price_loss, fees = fills_loss(spec.is_inverse, fills)
    loss = price_loss + fees if include_fees else price_loss
    # The exchange's own books agree with the fills.
    quantum = Fraction(CURRENCY_QUANTUM[currency])
    assert abs(Fraction(before.equity - after.equity) - (price_loss + fees)) <= 3 * quantum

    # The target, in the settlement currency, and one amount step's worth of loss at this stop.
    e, s = Fraction(entry), Fraction(stop)
    step = Fraction(spec.amount_step)
    if spec.is_inverse:
        step_loss = step * abs(1 / s - 1 / e)
        step_fees = Fraction(spec.taker_fee) * step * (1 / e + 1 / s)
        usd_per_unit = s  # a coin loss realized at the stop, in USD
    else:
        step_loss = step * abs(e - s)
        step_fees = Fraction(spec.taker_fee) * step * (e + s)
        usd_per_unit = Fraction(1)
    if include_fees:
        step_loss += step_fees
    if mode == "percent":
        target = Fraction(before.equity) * Fraction(D(value)) / 100
    else:
        target = Fraction(D(value)) / usd_per_unit
    slack = 3 * quantum  # the exchange's rounding of P&L and fees per fill
    assert loss <= target + slack, f"lost {float(loss)} {currency}, more than {float(target)}"
    assert target - loss < step_loss + slack, "the loss is within one amount step of the target"
    if mode == "fixed":
        loss_usd = loss * usd_per_unit
        assert loss_usd <= Fraction(D(value)) + slack * usd_per_unit
        assert Fraction(D(value)) - loss_usd < (step_loss + slack) * usd_per_unit
    await broker.disconnect()
