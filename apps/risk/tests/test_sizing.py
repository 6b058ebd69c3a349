"""Position sizing: hand-computed cases pin the formulas; property tests check the guarantees.

The guarantees (issue 5): the loss at the stop never exceeds the target risk, and is within one
amount step of it. The property tests recompute the loss from Deribit's signed P&L formulas with
exact rationals, not with the sizer's own loss function.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apps.brokers.base import InstrumentSpec, Side
from apps.brokers.simulator.instruments import DEFAULT_SPECS
from apps.risk.sizing import RefusalCode, SizingRefused, size_position

D = Decimal
BTC = DEFAULT_SPECS["BTC-PERPETUAL"]
ETH = DEFAULT_SPECS["ETH-PERPETUAL"]
BTC_USDC = DEFAULT_SPECS["BTC_USDC-PERPETUAL"]
ETH_USDC = DEFAULT_SPECS["ETH_USDC-PERPETUAL"]


def size(spec: InstrumentSpec = BTC, **kwargs):
    args = {
        "side": Side.BUY,
        "entry": D("50000"),
        "stop": D("49000"),
        "equity": D("1"),
        "mode": "percent",
        "value": D("1"),
        "leverage_cap": D("50"),
    }
    args.update(kwargs)
    return size_position(spec=spec, **args)


def refusal(spec: InstrumentSpec = BTC, **kwargs) -> SizingRefused:
    with pytest.raises(SizingRefused) as info:
        size(spec, **kwargs)
    return info.value


# --- hand-computed cases -------------------------------------------------------------------
# Each row: spec, inputs, expected amount, risk (settlement currency), risk_usd, leverage.
# Arithmetic in the comments; the expected numbers are typed from it, not from the sizer.
CASES = [
    pytest.param(
        # 1 % of 1 BTC = 0.01 BTC; |1/49000 − 1/50000| = 1/2 450 000; A ≤ 24 500 USD (step 10).
        # Notional 24 500/50 000 = 0.49 BTC; USD at the stop 0.01·49 000 = 490.
        BTC,
        {"side": "buy", "entry": "50000", "stop": "49000", "equity": "1", "value": "1"},
        "24500",
        "0.01",
        "490.00",
        "0.49",
        id="inverse-long-percent-exact",
    ),
    pytest.param(
        # 2 % of 0.5 BTC = 0.01 BTC; |1/51000 − 1/50000| = 1/2 550 000; A = 25 500; USD 0.01·51 000.
        BTC,
        {"side": "sell", "entry": "50000", "stop": "51000", "equity": "0.5", "value": "2"},
        "25500",
        "0.01",
        "510.00",
        "1.02",
        id="inverse-short-percent",
    ),
    pytest.param(
        # $100 at the stop = 100/39 000 BTC; A·1000/(39 000·40 000) ≤ 100/39 000 → A ≤ 4000;
        # loss 4000/1 560 000 = 0.00256410256410256… BTC (shown rounded up), USD 100.
        BTC,
        {
            "side": "buy",
            "entry": "40000",
            "stop": "39000",
            "equity": "1",
            "mode": "fixed",
            "value": "100",
        },
        "4000",
        "0.002564102565",
        "100.00",
        "0.1",
        id="inverse-long-fixed-usd-at-stop",
    ),
    pytest.param(
        # 1 % of 10 ETH = 0.1 ETH; |1/1900 − 1/2000| = 1/38 000; A ≤ 3800 (step 1).
        ETH,
        {"side": "buy", "entry": "2000", "stop": "1900", "equity": "10", "value": "1"},
        "3800",
        "0.1",
        "190.00",
        "0.19",
        id="inverse-eth-long-no-fees",
    ),
    pytest.param(
        # With fees: 1/38 000 + 0.0005·(1/2000 + 1/1900) = 101.95/3 800 000 per USD;
        # A ≤ 0.1·3 800 000/101.95 = 3727.3 → 3727; loss 3727·101.95/3 800 000 = 0.09999148684210526…
        # USD at the stop: 0.09999148684210526·1900 = 189.98382…
        ETH,
        {
            "side": "buy",
            "entry": "2000",
            "stop": "1900",
            "equity": "10",
            "value": "1",
            "include_fees": True,
        },
        "3727",
        "0.099991486843",
        "189.99",
        "0.19",  # 1.8635 ETH / 10 = 0.18635, shown rounded up
        id="inverse-eth-long-with-fees",
    ),
    pytest.param(
        # $50 at the stop 2100 = 50/2100 ETH; |1/2100 − 1/2000| = 100/4 200 000 → A ≤ 50·2000/100 = 1000.
        ETH,
        {
            "side": "sell",
            "entry": "2000",
            "stop": "2100",
            "equity": "10",
            "mode": "fixed",
            "value": "50",
        },
        "1000",
        "0.023809523810",
        "50.00",
        "0.05",
        id="inverse-eth-short-fixed",
    ),
    pytest.param(
        # 1 % of 10 000 USDC = 100; |30 000 − 29 500| = 500 per BTC; q = 0.2; notional 6000 USDC.
        BTC_USDC,
        {"side": "buy", "entry": "30000", "stop": "29500", "equity": "10000", "value": "1"},
        "0.2",
        "100",
        "100.00",
        "0.6",
        id="linear-long-percent",
    ),
    pytest.param(
        # With fees: 500 + 0.0005·(30 000 + 29 500) = 529.75 per BTC; q ≤ 0.18876… → 0.188;
        # loss 0.188·529.75 = 99.593 USDC; notional 0.188·30 000 = 5640 → leverage 0.564.
        BTC_USDC,
        {
            "side": "buy",
            "entry": "30000",
            "stop": "29500",
            "equity": "10000",
            "value": "1",
            "include_fees": True,
        },
        "0.188",
        "99.593",
        "99.60",
        "0.57",
        id="linear-long-percent-with-fees",
    ),
    pytest.param(
        # $50 = 50 USDC; |2000 − 2040| = 40 per ETH; q = 1.25; notional 2500 of 5000 USDC.
        ETH_USDC,
        {
            "side": "sell",
            "entry": "2000",
            "stop": "2040",
            "equity": "5000",
            "mode": "fixed",
            "value": "50",
        },
        "1.25",
        "50",
        "50.00",
        "0.5",
        id="linear-short-fixed",
    ),
    pytest.param(
        # 1 % of 1000 = 10 USDC; 300 per BTC → q ≤ 0.0333… → 0.033 (loss 9.9); 0.034 would lose 10.2.
        BTC_USDC,
        {"side": "buy", "entry": "30000", "stop": "29700", "equity": "1000", "value": "1"},
        "0.033",
        "9.9",
        "9.90",
        "0.99",
        id="linear-rounds-down-to-step",
    ),
]


@pytest.mark.parametrize(("spec", "inputs", "amount", "risk", "risk_usd", "leverage"), CASES)
def test_hand_computed_cases(spec, inputs, amount, risk, risk_usd, leverage):
    result = size(spec, **inputs)
    assert result.amount == D(amount)
    assert result.risk == D(risk)
    assert result.risk_usd == D(risk_usd)
    assert result.leverage == D(leverage)
    assert result.risk_currency == spec.settlement_currency


def test_inverse_fixed_risk_is_converted_at_the_stop_not_the_entry():
    # At the entry (40 000) $100 would be 0.0025 BTC and allow A = 3900; at the stop it is
    # 100/39 000 BTC, which allows 4000 — and that loss, realized at 39 000, is worth exactly $100.
    result = size(BTC, entry="40000", stop="39000", mode="fixed", value="100")
    assert result.amount == D("4000")
    assert result.target_risk_usd == D("100.00")


def test_fees_outside_the_risk_are_reported_and_inside_the_risk_shrink_the_amount():
    without = size(BTC_USDC, entry="30000", stop="29500", equity="10000", value="1")
    inside = size(
        BTC_USDC, entry="30000", stop="29500", equity="10000", value="1", include_fees=True
    )
    # 0.2 BTC pays 0.0005·0.2·(30 000 + 29 500) = 5.95 USDC of taker fees.
    assert without.fees == D("5.95")
    assert inside.amount < without.amount
    assert inside.risk <= D("100") and without.risk == D("100")


def test_notional_and_margin_in_the_settlement_currency():
    result = size(BTC)  # A = 24 500 USD at 50 000: 0.49 BTC; margin 0.49/50 + 0.0005·0.49
    assert result.notional == D("0.49")
    assert result.notional_usd == D("24500.00")
    assert result.required_margin == D("0.010045")


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "stop"),
    [("buy", "50500"), ("buy", "50000"), ("sell", "49500"), ("sell", "50000")],
    ids=["long-stop-above", "long-stop-equal", "short-stop-below", "short-stop-equal"],
)
def test_stop_on_the_wrong_side_or_at_entry_is_refused(side, stop):
    refused = refusal(side=side, stop=stop)
    assert refused.code is RefusalCode.STOP_WRONG_SIDE
    assert refused.field == "stop"


def test_minimum_amount_above_the_risk_is_refused():
    # 1 % of 0.0001 BTC = 0.000001 BTC allows A ≤ 2.45 USD; the minimum is 10.
    refused = refusal(equity="0.0001")
    assert refused.code is RefusalCode.MIN_AMOUNT_EXCEEDS_RISK
    assert "minimum amount 10" in refused.message


def test_leverage_above_the_cap_is_refused_not_shrunk():
    # 5 % of 1 BTC with a 0.2 % stop: A = 0.05·49 900·50 000/100 = 1 247 500 USD = 24.95 BTC.
    refused = refusal(stop="49900", value="5", leverage_cap="10")
    assert refused.code is RefusalCode.LEVERAGE_ABOVE_CAP
    assert "24.95x" in refused.message
    assert size(stop="49900", value="5", leverage_cap="25").amount == D("1247500")


def test_leverage_above_the_instrument_maximum_is_refused_even_under_the_cap():
    # 10 % with a 0.1 % stop: A = 0.1·49 950·50 000/50 = 4 995 000 USD = 99.9 BTC > 50x.
    refused = refusal(stop="49950", value="10", leverage_cap="100")
    assert refused.code is RefusalCode.LEVERAGE_ABOVE_INSTRUMENT_MAX


def test_shrink_to_fit_is_an_explicit_choice_with_a_warning():
    result = size(stop="49900", value="5", leverage_cap="10", shrink_to_fit=True)
    assert result.amount == D("500000")  # 10x of 1 BTC at 50 000
    assert result.leverage == D("10")
    assert "SHRUNK_TO_FIT" in result.warning_codes
    assert result.risk < result.target_risk


def test_insufficient_funds_is_refused_at_the_margin_boundary():
    # Needs 0.49/50 + 0.0005·0.49 = 0.010045 BTC.
    assert size(available_funds="0.010045").amount == D("24500")
    refused = refusal(available_funds="0.010044")
    assert refused.code is RefusalCode.INSUFFICIENT_FUNDS
    assert refused.field == "available_funds"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"entry": "0"}, "entry"),
        ({"entry": "-50000"}, "entry"),
        ({"stop": "NaN"}, "stop"),
        ({"stop": float("nan")}, "stop"),
        ({"equity": "Infinity"}, "equity"),
        ({"equity": "0"}, "equity"),
        ({"value": "100.01"}, "value"),
        ({"value": "0"}, "value"),
        ({"value": "-1"}, "value"),
        ({"value": "abc"}, "value"),
        ({"leverage_cap": "0"}, "leverage_cap"),
        ({"available_funds": "-1"}, "available_funds"),
        ({"side": "up"}, "side"),
        ({"mode": "kelly"}, "mode"),
        ({"mode": "fixed", "value": "60000"}, "value"),  # $60 000 at 49 000 is more than 1 BTC
    ],
)
def test_absurd_inputs_are_refused(kwargs, field):
    refused = refusal(**kwargs)
    assert refused.code is RefusalCode.INVALID_INPUT
    assert refused.field == field


def test_percent_of_exactly_100_is_allowed():
    # 1 BTC at a 10 % stop: |1/45 000 − 1/50 000| = 1/450 000 → A = 450 000 USD (9x).
    assert size(stop="45000", value="100").amount == D("450000")


def test_broken_instrument_spec_is_refused():
    refused = refusal(replace(BTC, amount_step=D("0")))
    assert refused.code is RefusalCode.INVALID_INPUT


def test_a_spec_is_checked_once_but_refused_every_time():
    """The spec's numbers are checked and converted once per spec (specs are immutable): a broken
    spec is refused on every trade, and a spec equal to one already seen sizes the same."""
    broken = replace(BTC, taker_fee=D("-0.0005"))
    for _ in range(2):
        assert refusal(broken).code is RefusalCode.INVALID_INPUT
    first = size(replace(BTC, amount_step=D("20")))
    again = size(replace(BTC, amount_step=D("20")))  # an equal spec, another object
    assert again == first and first.amount % 20 == 0


# --- warnings ------------------------------------------------------------------------------


def test_warnings_name_what_the_trader_should_know():
    # 1.5 % of 100 USDC = 1.5; 1000 per BTC → 0.0015 → 0.001 (risk 1.0 = 66.7 % of the target).
    coarse = size(BTC_USDC, entry="30000", stop="29000", equity="100", value="1.5")
    assert "RISK_ROUNDED_DOWN" in coarse.warning_codes
    # A 100 USD stop on 30 000 costs ≈ 30 USDC of fees per BTC: 30 % of the risk.
    tight = size(BTC_USDC, entry="30000", stop="29900", equity="100000", value="1")
    assert "FEES_OUTSIDE_RISK" in tight.warning_codes
    assert (
        "FEES_OUTSIDE_RISK"
        not in size(
            BTC_USDC, entry="30000", stop="29900", equity="100000", value="1", include_fees=True
        ).warning_codes
    )
    assert "PRICE_OFF_TICK" in size(entry="50000.25").warning_codes
    assert "LARGE_RISK" in size(value="20").warning_codes
    assert "LEVERAGE_NEAR_CAP" in size(stop="49900", value="5", leverage_cap="30").warning_codes
    assert size().warnings == ()


# --- properties ----------------------------------------------------------------------------

PRICE_RANGE = {"BTC": (3_000, 200_000), "ETH": (100, 12_000)}


def independent_loss(spec: InstrumentSpec, side: Side, amount, entry, stop, fees: bool) -> Fraction:
    """Loss at the stop from Deribit's signed P&L of closing at the stop, plus taker fees."""
    a, e, x = Fraction(amount), Fraction(entry), Fraction(stop)
    rate = Fraction(spec.taker_fee)
    if spec.is_inverse:
        long_pnl = a * (1 / e - 1 / x)  # A·(1/E − 1/X) coin
        paid = rate * a / e + rate * a / x
    else:
        long_pnl = a * (x - e)  # q·(X − E) USDC
        paid = rate * a * e + rate * a * x
    pnl = long_pnl if side is Side.BUY else -long_pnl
    return -pnl + (paid if fees else 0)


@st.composite
def scenarios(draw, spec: InstrumentSpec, *, feasible: bool = False):
    """Random trades; ``feasible`` keeps stops, risks and caps where most trades can be sized."""
    tick = spec.tick_size
    low, high = PRICE_RANGE[spec.base_currency]
    entry = tick * draw(st.integers(int(low / tick), int(high / tick)))
    side = draw(st.sampled_from([Side.BUY, Side.SELL]))
    # Stop distance 0.05 % (0.5 % when feasible) .. 30 % of the entry.
    distance = Decimal(draw(st.integers(50 if feasible else 5, 3000))) / 10_000
    ticks = max(1, int(entry * distance / tick))
    stop = entry - ticks * tick if side is Side.BUY else entry + ticks * tick
    if spec.is_inverse:
        equity = Decimal(draw(st.integers(10**5 if feasible else 1, 10**10))) / 10**8  # ≤ 100 coins
        equity_usd = equity * entry
    else:
        equity = Decimal(draw(st.integers(10**4 if feasible else 1, 10**9))) / 100  # ≤ 10 M USDC
        equity_usd = equity
    mode = draw(st.sampled_from(["percent", "fixed"]))
    percent = Decimal(draw(st.integers(1, 500 if feasible else 10_000))) / 100  # ≤ 5 % / 100 %
    if mode == "percent":
        value = percent
    elif feasible:
        value = max(Decimal("0.01"), (equity_usd * percent / 100).quantize(Decimal("0.01")))
    else:
        value = Decimal(draw(st.integers(1, 10_000_000))) / 100  # $0.01 .. $100 000
    funds = 100 if feasible else draw(st.integers(0, 100))
    return {
        "side": side,
        "entry": entry,
        "stop": stop,
        "equity": equity,
        "available_funds": equity * funds / 100,
        "mode": mode,
        "value": value,
        "leverage_cap": Decimal(draw(st.integers(20 if feasible else 1, 100))),
        "include_fees": draw(st.booleans()),
    }


def independent_target(spec: InstrumentSpec, s: dict) -> Fraction:
    if s["mode"] == "percent":
        return Fraction(s["equity"]) * Fraction(s["value"]) / 100
    usd = Fraction(s["value"])
    return usd / Fraction(s["stop"]) if spec.is_inverse else usd


SPECS = [pytest.param(spec, id=name) for name, spec in DEFAULT_SPECS.items()]
PROPERTY_SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@pytest.mark.parametrize("spec", SPECS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_loss_at_the_stop_never_exceeds_the_target_and_is_within_one_step(spec, data):
    s = data.draw(scenarios(spec, feasible=True))
    try:
        result = size_position(spec=spec, **s)
    except SizingRefused:
        assume(False)
        return
    target = independent_target(spec, s)
    fees = s["include_fees"]
    loss = independent_loss(spec, s["side"], result.amount, s["entry"], s["stop"], fees)
    one_more = independent_loss(
        spec, s["side"], result.amount + spec.amount_step, s["entry"], s["stop"], fees
    )
    assert loss <= target, "rounding must go toward less risk"
    assert one_more > target, "the loss must be within one amount step of the target"
    assert result.amount >= spec.min_amount
    assert Fraction(result.amount) / Fraction(spec.amount_step) % 1 == 0
    # Displayed figures are rounded up, never below the exact loss.
    assert Fraction(result.risk) >= loss
    assert result.risk <= result.target_risk


@pytest.mark.parametrize("spec", SPECS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_refusal_is_justified_and_every_size_respects_the_limits(spec, data):
    s = data.draw(scenarios(spec))
    target = independent_target(spec, s)
    fees = s["include_fees"]
    e = Fraction(s["entry"])
    equity = Fraction(s["equity"])
    step = Fraction(spec.amount_step)
    unit_loss = independent_loss(spec, s["side"], spec.amount_step, s["entry"], s["stop"], fees)
    ideal = (target // unit_loss) * step  # the largest step multiple whose loss fits the target

    def notional(amount: Fraction) -> Fraction:
        return amount / e if spec.is_inverse else amount * e

    try:
        result = size_position(spec=spec, **s)
    except SizingRefused as refused:
        code = refused.code
        if code is RefusalCode.INVALID_INPUT:
            assert s["mode"] == "fixed" and target > equity
        elif code is RefusalCode.MIN_AMOUNT_EXCEEDS_RISK:
            assert (
                independent_loss(spec, s["side"], spec.min_amount, s["entry"], s["stop"], fees)
                > target
            )
        elif code is RefusalCode.LEVERAGE_ABOVE_INSTRUMENT_MAX:
            assert notional(ideal) / equity > Fraction(spec.max_leverage)
        elif code is RefusalCode.LEVERAGE_ABOVE_CAP:
            assert notional(ideal) / equity > Fraction(s["leverage_cap"])
        elif code is RefusalCode.INSUFFICIENT_FUNDS:
            need = notional(ideal) * (1 / Fraction(spec.max_leverage) + Fraction(spec.taker_fee))
            assert need > Fraction(s["available_funds"])
        else:
            pytest.fail(f"unexpected refusal {code}")
        return
    assert Fraction(result.amount) == ideal
    leverage = notional(ideal) / equity
    assert leverage <= Fraction(s["leverage_cap"])
    assert leverage <= Fraction(spec.max_leverage)
