"""The eight strategies fire on crafted series and stay silent otherwise; the base types hold
their rules (signal sanity, parameter bounds, warm-up, page state)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from apps.brokers.base import Candle, Side
from apps.strategies.base import (
    Candles,
    ClosedTrade,
    ParamError,
    ParamSpec,
    ParamType,
    Signal,
)
from apps.strategies.registry import get_strategy, strategy_ids
from apps.strategies.tests.candle_series import (
    make_candles,
    random_walk,
    real_candles,  # noqa: F401 (fixture)
    replay_signals,
)


def closed_trade(side: Side, exit_ms: int = 0) -> ClosedTrade:
    one = Decimal(1)
    return ClosedTrade(side, one, one, one, Decimal(0), Decimal(0), exit_ms, exit_ms, "stop_loss")


# --- base types ------------------------------------------------------------------------


def test_signal_refuses_a_stop_on_the_wrong_side():
    with pytest.raises(ValueError, match="buy needs"):
        Signal(Side.BUY, 100.0, 101.0, 105.0, "bad")
    with pytest.raises(ValueError, match="sell needs"):
        Signal(Side.SELL, 100.0, 99.0, 95.0, "bad")
    ok = Signal(Side.SELL, Decimal("100"), Decimal("101"), Decimal("95"), "fine")
    assert ok.as_dict()["stop"] == "101"


def test_param_spec_coerces_and_bounds():
    spec = ParamSpec("fast", ParamType.INT, 10, 2, 50)
    assert spec.coerce(12.0) == 12
    with pytest.raises(ParamError) as err:
        spec.coerce(1)
    assert err.value.field == "fast" and "at least 2" in err.value.message
    with pytest.raises(ParamError, match="whole number"):
        spec.coerce(2.5)
    with pytest.raises(ParamError, match="number"):
        spec.coerce(True)
    flag = ParamSpec("on", ParamType.BOOL, False)
    with pytest.raises(ParamError):
        flag.coerce("yes")
    choice = ParamSpec("side", ParamType.CHOICE, "buy", choices=("buy", "sell"))
    with pytest.raises(ParamError, match="one of buy, sell"):
        choice.coerce("hold")


def test_unknown_and_cross_field_params_are_refused():
    with pytest.raises(ParamError) as err:
        get_strategy("ma_cross", {"fastest": 3})
    assert err.value.field == "fastest"
    with pytest.raises(ParamError) as err:
        get_strategy("ma_cross", {"fast": 30, "slow": 10})
    assert err.value.field == "fast"


def test_analyze_accepts_candle_objects_and_waits_for_warmup():
    strategy = get_strategy("ma_cross", {"fast": 2, "slow": 3})
    candles = [Candle(60_000 * i, 10.0, 10.0, 10.0, 10.0) for i in range(3)]
    assert strategy.analyze(candles) is None
    state = strategy.state()
    assert state["status"] == "warming_up"
    assert state["checkpoints"][0]["value"] == "3/4"


# --- MA cross ----------------------------------------------------------------------------


def test_ma_cross_fires_long_exactly_at_the_bullish_cross():
    closes = [100 - 0.1 * i for i in range(40)] + [96 + 0.3 * i for i in range(20)]
    candles = make_candles(closes)
    fast = np.convolve(closes, np.ones(10) / 10, "valid")[20:]  # aligned with slow
    slow = np.convolve(closes, np.ones(30) / 30, "valid")
    expected = 29 + int(np.flatnonzero(fast > slow)[0])
    signals = replay_signals(get_strategy("ma_cross"), candles)
    assert [i for i, _ in signals] == [expected]
    signal = signals[0][1]
    assert signal.side is Side.BUY
    assert signal.entry == closes[expected]
    assert signal.stop == pytest.approx(closes[expected] * 0.98)
    assert signal.take_profit == pytest.approx(closes[expected] * 1.06)
    assert any(c.name == "bullish cross" and c.passed for c in signal.checkpoints)


def test_ma_cross_fires_short_on_bearish_cross_and_is_silent_on_a_steady_trend():
    closes = [100 + 0.1 * i for i in range(40)] + [104 - 0.3 * i for i in range(20)]
    signals = replay_signals(get_strategy("ma_cross"), make_candles(closes))
    assert [s.side for _, s in signals] == [Side.SELL]
    assert signals[0][1].stop == pytest.approx(signals[0][1].entry * 1.02)
    assert (
        replay_signals(get_strategy("ma_cross"), make_candles([100 + 0.1 * i for i in range(80)]))
        == []
    )


def _precompute_equals_analyze(strategy, candles: Candles) -> None:
    decisions = strategy.precompute(candles)
    replayed = np.zeros(len(candles), dtype=np.int8)
    for i, signal in replay_signals(strategy, candles):
        replayed[i] = 1 if signal.side is Side.BUY else -1
    assert np.count_nonzero(replayed) > 0
    assert np.array_equal(decisions, replayed)


def test_ma_cross_precompute_equals_analyze_on_every_candle():
    _precompute_equals_analyze(get_strategy("ma_cross"), random_walk(4_000))
    _precompute_equals_analyze(
        get_strategy("ma_cross", {"fast": 3, "slow": 7}), random_walk(2_000, 5)
    )


@pytest.mark.slow
def test_ma_cross_precompute_equals_analyze_on_the_real_month(real_candles):  # noqa: F811
    _precompute_equals_analyze(get_strategy("ma_cross"), real_candles)


def test_strategies_without_precompute_say_so():
    for sid in strategy_ids():
        if sid != "ma_cross":
            assert get_strategy(sid).precompute(random_walk(100)) is None


# --- FastTest ----------------------------------------------------------------------------


def test_fast_test_signals_at_once_and_alternates_after_each_closed_trade():
    strategy = get_strategy("fast_test")
    candles = make_candles([100.0, 101.0])
    first = strategy.analyze(candles.slice(0, 1))
    assert first is not None and first.side is Side.BUY
    assert first.stop == pytest.approx(99.7) and first.take_profit == pytest.approx(100.3)
    strategy.on_trade_closed(closed_trade(Side.BUY))
    second = strategy.analyze(candles)
    assert second is not None and second.side is Side.SELL
    assert second.stop == pytest.approx(101 * 1.003)
    strategy.on_trade_closed(closed_trade(Side.SELL))
    assert strategy.analyze(candles).side is Side.BUY
    assert get_strategy("fast_test", {"first_side": "sell"}).analyze(candles).side is Side.SELL


def test_fast_test_is_silent_without_candles():
    assert get_strategy("fast_test").analyze([]) is None


# --- Razor -------------------------------------------------------------------------------


def test_razor_scores_a_steady_decline_as_a_long():
    closes = [100 * (1 - 0.002 * i) for i in range(30)]
    signals = replay_signals(get_strategy("razor"), make_candles(closes))
    assert signals, "RSI 0 (48) + EMA down (5) + ATR band (6) = 59 >= 58 must signal"
    index, signal = signals[0]
    assert index == 20  # first candle after the 21-candle warm-up
    assert signal.side is Side.BUY and signal.strength == 59
    assert signal.stop == pytest.approx(signal.entry * 0.995)
    assert signal.take_profit == pytest.approx(signal.entry * 1.0065)


def test_razor_is_silent_on_flat_prices_and_respects_cooldown_and_daily_limit():
    assert replay_signals(get_strategy("razor"), make_candles([100.0] * 60)) == []
    candles = make_candles([100 * (1 - 0.002 * i) for i in range(30)])
    strategy = get_strategy("razor", {"cooldown_minutes": 5, "max_daily_trades": 2})
    last_open = int(candles.open_time_ms[-1])
    strategy.on_trade_closed(closed_trade(Side.BUY, exit_ms=last_open - 60_000))
    assert strategy.analyze(candles) is None  # within 5 minutes of the exit
    strategy.on_trade_closed(closed_trade(Side.BUY, exit_ms=last_open - 600_000))
    assert strategy.analyze(candles) is None  # two trades today
    assert strategy.state()["checkpoints"][0] == {
        "name": "daily limit",
        "value": 2,
        "passed": False,
    }


# --- Thor --------------------------------------------------------------------------------


def test_thor_long_on_rsi_dip_below_middle_with_swing_stop_and_middle_target():
    base = [100 + 0.1 * (-1) ** i for i in range(40)]
    candles = make_candles([*base, 99.8, 99.6, 99.4, 99.2], spread=0.001)
    signals = replay_signals(get_strategy("thor"), candles)
    assert signals and all(s.side is Side.BUY for _, s in signals)
    index, signal = signals[0]
    window = candles.slice(0, index + 1)
    swing_low = window.low[-5:].min()
    assert signal.stop == pytest.approx(min(swing_low * 0.9998, signal.entry * 0.9995))
    middle = np.mean(window.close[-20:])
    assert signal.take_profit == pytest.approx(middle)


def test_thor_short_mirror_and_silent_outside_the_atr_band():
    base = [100 + 0.1 * (-1) ** i for i in range(40)]
    signals = replay_signals(
        get_strategy("thor"), make_candles([*base, 100.2, 100.4, 100.6, 100.8], spread=0.001)
    )
    assert signals and all(s.side is Side.SELL for _, s in signals)
    quiet = make_candles([*[100.0] * 40, 99.99, 99.98, 99.97], spread=0.00001)
    assert replay_signals(get_strategy("thor"), quiet) == []


# --- Scalping ----------------------------------------------------------------------------


def test_scalping_buys_a_pullback_in_an_uptrend():
    up = [100 * 1.001**i for i in range(60)]
    pullback = [up[-1] * 0.9993**k for k in range(1, 13)]
    signals = replay_signals(get_strategy("scalping"), make_candles(up + pullback))
    assert [(i, s.side) for i, s in signals] == [(71, Side.BUY)]
    signal = signals[0][1]
    assert signal.stop == pytest.approx(signal.entry * 0.997)
    assert signal.take_profit == pytest.approx(signal.entry * 1.003)


def test_scalping_is_silent_in_a_trend_without_pullback():
    assert (
        replay_signals(get_strategy("scalping"), make_candles([100 * 1.001**i for i in range(80)]))
        == []
    )


# --- Vortex ------------------------------------------------------------------------------


def _vortex_series(direction: int) -> list[float]:
    trend = [100 * (1 + 0.0005 * direction) ** i for i in range(150)]
    shock = [trend[-1] * (1 - 0.003 * direction) ** k for k in range(1, 4)]
    return [*trend, *shock, shock[-1] * (1 + 0.001 * direction)]


def test_vortex_long_after_band_touch_and_rsi_turn():
    signals = replay_signals(get_strategy("vortex"), make_candles(_vortex_series(+1)))
    assert [(i, s.side) for i, s in signals] == [(153, Side.BUY)]
    signal = signals[0][1]
    risk = signal.entry - signal.stop
    assert signal.take_profit == pytest.approx(signal.entry + risk)  # 1R


def test_vortex_short_mirror_and_silent_in_a_plain_trend():
    signals = replay_signals(get_strategy("vortex"), make_candles(_vortex_series(-1)))
    assert [(i, s.side) for i, s in signals] == [(153, Side.SELL)]
    trend = make_candles([100 * 1.0005**i for i in range(160)])
    assert replay_signals(get_strategy("vortex"), trend) == []
    only_rsi = get_strategy("vortex", {"trigger": "rsi_cross"})
    assert replay_signals(only_rsi, make_candles(_vortex_series(+1)[:-1])) == []


# --- SMC ---------------------------------------------------------------------------------

SMC_SERIES = [99.0 + 0.05 * i for i in range(10)] + [
    100, 100.2, 100.4, 100.6, 100.8, 101.0, 100.8, 100.6, 100.4, 100.2,
    100.0, 100.1, 100.2, 100.3, 100.2, 100.5, 100.9, 101.3,
]  # fmt: skip


def test_smc_break_of_structure_long_with_order_block_stop():
    candles = make_candles(SMC_SERIES, spread=0.0002)
    signals = replay_signals(get_strategy("smc"), candles)
    assert [(i, s.side) for i, s in signals] == [(27, Side.BUY)]
    signal = signals[0][1]
    block_low = candles.low[24]  # the last bearish candle before the break (100.3 -> 100.2)
    assert signal.stop == pytest.approx(block_low * (1 - 0.0005))
    assert signal.take_profit == pytest.approx(signal.entry + 2 * (signal.entry - signal.stop))


def test_smc_short_mirror_and_silent_without_a_break():
    mirrored = [200 - v for v in SMC_SERIES]
    signals = replay_signals(get_strategy("smc"), make_candles(mirrored, spread=0.0002))
    assert [(i, s.side) for i, s in signals] == [(27, Side.SELL)]
    assert replay_signals(get_strategy("smc"), make_candles(SMC_SERIES[:-1], spread=0.0002)) == []


# --- Price action ------------------------------------------------------------------------


def _support_then(o: float, h: float, lo: float, c: float) -> Candles:
    closes = [
        101,
        100.6,
        100.2,
        99.8,
        99.4,
        99.0,
        99.4,
        99.8,
        100.2,
        100.6,
        101.0,
        100.6,
        100.2,
        99.8,
        99.4,
    ]
    return make_candles(
        [*closes, c],
        opens=[*closes, o],
        highs=[*(v * 1.0002 for v in closes), h],
        lows=[*(v * 0.9998 for v in closes), lo],
    )


def test_price_action_hammer_at_support_goes_long():
    signals = replay_signals(get_strategy("price_action"), _support_then(99.3, 99.46, 98.99, 99.45))
    assert [(i, s.side) for i, s in signals] == [(15, Side.BUY)]
    assert "hammer" in signals[0][1].reason
    assert signals[0][1].stop == pytest.approx(99.0 * 0.9998 * (1 - 0.0005))


def test_price_action_needs_the_pattern_and_the_level():
    no_pattern = _support_then(99.3, 99.46, 99.2, 99.35)
    assert replay_signals(get_strategy("price_action"), no_pattern) == []
    far_from_support = _support_then(100.3, 100.46, 99.99, 100.45)  # a hammer, but 1 % above
    assert replay_signals(get_strategy("price_action"), far_from_support) == []


# --- all of them -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sid", ["razor", "thor", "scalping", "vortex", "smc", "price_action", "ma_cross"]
)
def test_every_signal_on_a_random_walk_is_sane_and_state_is_serialisable(sid):
    import json

    strategy = get_strategy(sid)
    signals = replay_signals(strategy, random_walk(1_500, seed=3))
    for _, signal in signals:
        assert signal.checkpoints, "a signal shows what it looked at"
        assert signal.reason
    json.dumps(strategy.state())
