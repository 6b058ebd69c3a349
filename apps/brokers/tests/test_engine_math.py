"""Contract math of the simulator against hand-computed cases (inverse and linear, long and short, fees)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from apps.brokers.simulator import contract
from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.instruments import DEFAULT_SPECS, default_specs, with_fees

BTC = "BTC-PERPETUAL"
ETH = "ETH-PERPETUAL"
BTC_USDC = "BTC_USDC-PERPETUAL"
ETH_USDC = "ETH_USDC-PERPETUAL"


def engine_at(prices: dict[str, float], **kwargs) -> ExchangeEngine:
    return ExchangeEngine(prices=prices, now_ms=0, **kwargs)


def test_inverse_long_pnl_and_taker_fees_are_hand_computed():
    engine = engine_at({BTC: 50_000})
    engine.buy(BTC, 10_000, type="market")
    engine.set_price(BTC, 55_000)
    sell = engine.sell(BTC, 10_000, type="market")
    # 10000 × (1/50000 − 1/55000) = 0.2 − 0.181818181818… BTC
    assert sell.trades[0].profit_loss == D("0.0181818182")
    fees = [t.fee for t in engine.trades()]
    assert fees == [D("0.0001000000"), D("0.0000909091")]  # 0.0005 × 10000 / price
    assert engine.account("BTC").balance == D("1") + D("0.0181818182") - D("0.0001909091")
    assert engine.position(BTC).size == 0


def test_inverse_short_pnl_is_hand_computed():
    engine = engine_at({BTC: 50_000})
    engine.sell(BTC, 10_000, type="market")
    engine.set_price(BTC, 40_000)
    buy = engine.buy(BTC, 10_000, type="market")
    assert buy.trades[0].profit_loss == D("0.05")  # 10000 × (1/40000 − 1/50000)
    assert engine.fees_paid("BTC") == D("0.0001") + D("0.000125")
    assert engine.account("BTC").balance == D("1.049775")


def test_inverse_short_loses_when_price_rises():
    engine = engine_at({ETH: 2_000})
    engine.sell(ETH, 1_000, type="market")
    engine.set_price(ETH, 2_500)
    buy = engine.buy(ETH, 1_000, type="market")
    assert buy.trades[0].profit_loss == D("-0.1")  # 1000 × (1/2500 − 1/2000)
    assert buy.trades[0].fee_currency == "ETH"


def test_linear_long_pnl_and_fees_in_usdc():
    engine = engine_at({BTC_USDC: 20_000})
    engine.buy(BTC_USDC, "0.5", type="market")
    engine.set_price(BTC_USDC, 21_000)
    sell = engine.sell(BTC_USDC, "0.5", type="market")
    assert sell.trades[0].profit_loss == D("500")  # 0.5 × (21000 − 20000)
    assert [t.fee for t in engine.trades()] == [D("5"), D("5.25")]  # 0.0005 × q × price
    assert all(t.fee_currency == "USDC" for t in engine.trades())
    assert engine.account("USDC").balance == D("100489.75")


def test_linear_short_pnl():
    engine = engine_at({ETH_USDC: 1_500})
    engine.sell(ETH_USDC, "0.25", type="market")
    engine.set_price(ETH_USDC, 1_600)
    buy = engine.buy(ETH_USDC, "0.25", type="market")
    assert buy.trades[0].profit_loss == D("-25")
    assert engine.account("USDC").balance == D("100000") - 25 - D("0.1875") - D("0.2")


def test_inverse_average_entry_is_the_usd_weighted_harmonic_mean():
    engine = engine_at({BTC: 50_000})
    engine.buy(BTC, 10_000, type="market")
    engine.set_price(BTC, 40_000)
    engine.buy(BTC, 10_000, type="market")
    position = engine.position(BTC)
    # 20000 / (10000/50000 + 10000/40000) = 20000 / 0.45
    assert position.average_price == D("44444.44444444")
    engine.set_price(BTC, 50_000)
    half = engine.sell(BTC, 10_000, type="market")
    assert half.trades[0].profit_loss == D("0.025")  # (0.45 / 2) − 10000/50000
    rest = engine.sell(BTC, 10_000, type="market")
    assert rest.trades[0].profit_loss == D("0.025")
    assert engine.realized_pnl("BTC") == D("0.05")


def test_linear_average_entry_is_quantity_weighted():
    engine = engine_at({ETH_USDC: 100})
    engine.buy(ETH_USDC, 1, type="market")
    engine.set_price(ETH_USDC, 200)
    engine.buy(ETH_USDC, 3, type="market")
    assert engine.position(ETH_USDC).average_price == D("175")
    assert engine.position(ETH_USDC).size == D("4")


def test_flipping_a_position_realizes_the_closed_part_and_opens_the_rest_at_the_fill():
    engine = engine_at({BTC: 50_000})
    engine.buy(BTC, 10_000, type="market")
    engine.set_price(BTC, 40_000)
    flip = engine.sell(BTC, 30_000, type="market")
    assert flip.trades[0].profit_loss == D("-0.05")  # 10000 × (1/50000 − 1/40000)
    position = engine.position(BTC)
    assert position.size == D("-20000")
    assert position.average_price == D("40000")


def test_floating_pnl_and_equity_use_the_mark_price():
    engine = engine_at({BTC: 50_000})
    engine.buy(BTC, 10_000, type="market")
    engine.set_price(BTC, 55_000)
    position = engine.position(BTC)
    assert position.floating_profit_loss == D("0.0181818182")
    account = engine.account("BTC")
    assert account.equity == account.balance + D("0.0181818182")
    # initial margin: exposure 10000 USD / 55000 / max leverage 50
    assert account.initial_margin == (D(10_000) / D(55_000) / 50).quantize(D("1e-10"))
    assert account.available_funds == account.equity - account.initial_margin


def test_maker_fee_is_configurable_and_may_be_a_rebate():
    specs = default_specs()
    specs[BTC] = with_fees(specs[BTC], maker=D("-0.0001"), taker=D("0.00075"))
    engine = ExchangeEngine(specs=specs, prices={BTC: 50_000}, now_ms=0)
    engine.buy(BTC, 10_000, type="limit", price=49_000)
    engine.step_candle(BTC, 50_000, 50_100, 48_900, 49_500, 60_000)
    maker = engine.trades()[0]
    assert maker.liquidity == "M"
    assert maker.price == D("49000")
    assert maker.fee == (D("-0.0001") * D(10_000) / D(49_000)).quantize(D("1e-10"))
    taker = engine.sell(BTC, 10_000, type="market").trades[0]
    assert taker.liquidity == "T"
    assert taker.fee == (D("0.00075") * D(10_000) / D("49500")).quantize(D("1e-10"))


@pytest.mark.parametrize(
    ("name", "long", "amount", "entry", "exit", "expected"),
    [
        (BTC, True, D(10_000), D(50_000), D(55_000), D("0.0181818182")),
        (BTC, False, D(10_000), D(50_000), D(40_000), D("0.05")),
        (BTC_USDC, True, D("0.5"), D(20_000), D(21_000), D("500")),
        (ETH_USDC, False, D("0.25"), D(1_500), D(1_600), D("-25")),
    ],
)
def test_contract_pnl_function_matches_the_hand_computed_values(
    name, long, amount, entry, exit, expected
):
    assert (
        contract.pnl(DEFAULT_SPECS[name], long=long, amount=amount, entry=entry, exit=exit)
        == expected
    )


def test_contract_average_price_helpers():
    inverse = DEFAULT_SPECS[BTC]
    linear = DEFAULT_SPECS[BTC_USDC]
    fills = [(D(10_000), D(50_000)), (D(10_000), D(40_000))]
    assert contract.average_price(inverse, fills).quantize(D("0.01")) == D("44444.44")
    assert contract.average_price(linear, [(D(1), D(100)), (D(3), D(200))]) == D(175)
    assert contract.fee(linear, D(2), D(100), maker=False) == D("0.1")
