"""The backtester: same strategy, sizing and engine fills as paper trading; fast path equal to
the candle-by-candle path; the CSV loader names the bad line."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest

from apps.brokers.base import Side
from apps.brokers.simulator import contract
from apps.brokers.simulator.instruments import DEFAULT_SPECS
from apps.risk.sizing import size_position
from apps.strategies.backtest import (
    BacktestConfig,
    BacktestError,
    bracket_prices,
    run_backtest,
)
from apps.strategies.base import Signal, price_on_tick
from apps.strategies.candle_csv import CandleFileError, load_csv
from apps.strategies.registry import get_strategy
from apps.strategies.tests.candle_series import (
    make_candles,
    random_walk,
    real_candles,  # noqa: F401 (fixture)
)

SPEC = DEFAULT_SPECS["BTC-PERPETUAL"]


def _cross_then(move: float, after: int = 60):
    """Falling closes, then a steady rise (a bullish SMA 10/30 cross), then ``move`` per candle."""
    falling = [20_000 * (1 - 0.0005 * i) for i in range(40)]
    rising = [falling[-1] * (1 + 0.002 * k) for k in range(1, 16)]
    after_cross = [rising[-1] * (1 + move) ** k for k in range(1, after + 1)]
    return make_candles(falling + rising + after_cross, spread=0.0002)


def _expected_signal(candles):
    strategy = get_strategy("ma_cross")
    for i in range(len(candles)):
        signal = strategy.analyze(candles.slice(max(0, i + 1 - strategy.history), i + 1))
        if signal:
            return i, signal
    raise AssertionError("no cross in the crafted series")


def test_a_winning_long_exits_at_the_target_with_engine_fills_and_sizing():
    candles = _cross_then(+0.003)
    index, signal = _expected_signal(candles)
    result = run_backtest(get_strategy("ma_cross"), candles)
    assert len(result.trades) == 1
    trade = result.trades[0]
    entry, stop, target = bracket_prices(signal, SPEC.tick_size)
    sized = size_position(
        spec=SPEC, side=Side.BUY, entry=entry, stop=stop, equity=Decimal(1),
        mode="percent", value=Decimal(1), leverage_cap=Decimal(50),
    )  # fmt: skip
    assert trade.side is Side.BUY and trade.reason == "take_profit"
    assert trade.entry_index == index
    assert trade.entry_price == entry  # market entry at the close the signal saw
    assert trade.exit_price == target  # take-limit at its price
    assert trade.amount == sized.amount
    expected_pnl = contract.pnl(SPEC, long=True, amount=trade.amount, entry=entry, exit=target)
    # the triggered take-limit crosses at once: a taker fill, like the market entry
    expected_fees = contract.fee(SPEC, trade.amount, entry, maker=False) + contract.fee(
        SPEC, trade.amount, target, maker=False
    )
    assert trade.pnl == expected_pnl
    assert trade.fees == expected_fees
    assert result.end_equity == Decimal(1) + trade.pnl - trade.fees
    assert result.net_pnl == trade.net and result.win_rate == 100.0
    assert result.profit_factor is None  # no losing trade


def test_a_losing_long_exits_at_the_stop_and_the_next_trade_waits_for_a_new_cross():
    candles = _cross_then(-0.004, after=40)
    _, signal = _expected_signal(candles)
    result = run_backtest(get_strategy("ma_cross"), candles)
    trade = result.trades[0]
    _, stop, _ = bracket_prices(signal, SPEC.tick_size)
    assert trade.reason == "stop_loss"
    # a stop-market fills at its trigger, or at the candle's open when the price gapped past it
    assert trade.exit_price <= stop
    assert trade.pnl < 0
    assert result.max_drawdown > 0
    # the fall goes on: the next trade is the short of the later bearish cross, not a re-entry
    later = result.trades[1:]
    assert all(t.side is Side.SELL and t.signal.endswith("crossed below SMA 30") for t in later)
    assert all(t.entry_index >= trade.exit_index for t in later)


def test_an_open_position_is_closed_at_the_end_of_the_data():
    candles = _cross_then(+0.0001, after=10)
    result = run_backtest(get_strategy("ma_cross"), candles)
    assert [t.reason for t in result.trades] == ["end_of_data"]
    assert result.trades[0].exit_price == price_on_tick(candles.close[-1], SPEC.tick_size)


def test_sizing_refusals_are_recorded_not_traded():
    candles = _cross_then(+0.003)
    config = BacktestConfig(equity=Decimal("0.000001"))  # cannot afford the minimum amount
    result = run_backtest(get_strategy("ma_cross"), candles, config)
    assert result.trades == []
    assert result.refused and "MIN_AMOUNT_EXCEEDS_RISK" in result.refused[0][1]


def test_fast_path_gives_the_same_trades_as_candle_by_candle():
    candles = random_walk(6_000, seed=11)
    params = {"fast": 5, "slow": 20, "stop_loss_pct": 0.4, "take_profit_pct": 0.8}
    fast = run_backtest(get_strategy("ma_cross", params), candles, BacktestConfig(fast=True))
    slow = run_backtest(get_strategy("ma_cross", params), candles, BacktestConfig(fast=False))
    assert len(fast.trades) > 10
    assert fast.trades == slow.trades
    assert fast.summary()["net_pnl"] == slow.summary()["net_pnl"]


@pytest.mark.slow
def test_fast_path_equals_candle_by_candle_on_the_real_month(real_candles):  # noqa: F811
    fast = run_backtest(get_strategy("ma_cross"), real_candles, BacktestConfig(fast=True))
    slow = run_backtest(get_strategy("ma_cross"), real_candles, BacktestConfig(fast=False))
    assert fast.trades and fast.trades == slow.trades


def test_fast_test_alternates_sides_through_on_trade_closed():
    result = run_backtest(get_strategy("fast_test"), random_walk(600, seed=2))
    sides = [t.side for t in result.trades]
    assert len(sides) >= 4
    assert sides[:4] == [Side.BUY, Side.SELL, Side.BUY, Side.SELL]
    # it re-enters on the close of the candle where the previous trade ended
    for before, after in zip(result.trades, result.trades[1:], strict=False):
        assert after.entry_index == before.exit_index


def test_summary_has_the_json_keys_and_a_curve_per_candle():
    candles = random_walk(2_000, seed=4)
    result = run_backtest(
        get_strategy("ma_cross", {"stop_loss_pct": 0.3, "take_profit_pct": 0.6}), candles
    )
    summary = json.loads(json.dumps(result.summary()))
    for key in ("trades", "win_rate", "net_pnl", "fees", "profit_factor", "max_drawdown",
                "candles", "candles_per_second", "exposure"):  # fmt: skip
        assert key in summary
    assert summary["candles"] == 2_000 and summary["trades"] == len(result.trades)
    assert len(result.equity_curve) == 2_000
    assert result.equity_curve[-1] == pytest.approx(float(result.end_equity), rel=1e-9)
    assert 0 < result.exposure <= 100


def test_prices_go_on_the_tick_with_the_stop_away_from_the_entry():
    tick = Decimal("0.5")
    assert price_on_tick(100.26, tick) == Decimal("100.5")
    assert price_on_tick(Decimal("100.25"), tick) == Decimal("100.0")  # half-even
    buy = Signal(Side.BUY, 100.2, 98.3, 106.7, "x")
    assert bracket_prices(buy, tick) == (Decimal("100.0"), Decimal("98.0"), Decimal("106.5"))
    sell = Signal(Side.SELL, 100.2, 102.3, 94.2, "x")
    assert bracket_prices(sell, tick) == (Decimal("100.0"), Decimal("102.5"), Decimal("94.0"))


def test_a_strategy_on_another_timeframe_is_refused():
    five_minute = make_candles([100.0] * 50)
    stretched = type(five_minute)(
        five_minute.open_time_ms * 5, five_minute.open, five_minute.high,
        five_minute.low, five_minute.close, five_minute.volume,
    )  # fmt: skip
    with pytest.raises(BacktestError, match="1-minute candles; the data has 5-minute"):
        run_backtest(get_strategy("ma_cross"), stretched)


# --- the CSV loader ----------------------------------------------------------------------


def test_csv_with_iso_and_unix_times(tmp_path):
    iso = tmp_path / "iso.csv"
    iso.write_text(
        "open_time,open,high,low,close,volume\n"
        "2023-03-01 00:00:00+00:00,10,12,9,11,1.5\n"
        "2023-03-01T00:01:00Z,11,11,10,10.5,2\n"
    )
    candles = load_csv(iso)
    assert candles.open_time_ms.tolist() == [1_677_628_800_000, 1_677_628_860_000]
    assert candles.close.tolist() == [11.0, 10.5]
    seconds = tmp_path / "s.csv"
    seconds.write_text("open_time,open,high,low,close\n1677628800,1,1,1,1\n1677628860000,1,1,1,1\n")
    assert load_csv(seconds).open_time_ms.tolist() == [1_677_628_800_000, 1_677_628_860_000]
    assert np.all(load_csv(seconds).volume == 0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,open,high,low,close\n", "line 1: missing column(s) open_time"),
        ("open_time,open,high,low,close\n1677628800,1,1,1,1\n1677628860,x,1,1,1\n", "line 3"),
        ("open_time,open,high,low,close\n1677628800,1,1,1\n", "line 2: expected 5 fields"),
        ("open_time,open,high,low,close\n1677628800,5,4,3,5\n", "line 2: high/low"),
        (
            "open_time,open,high,low,close\n1677628860,1,1,1,1\n1677628800,1,1,1,1\n",
            "line 3: open_time",
        ),
        ("open_time,open,high,low,close\n", "no candles"),
    ],
)
def test_a_bad_csv_names_the_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(CandleFileError) as err:
        load_csv(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CandleFileError, match="cannot read"):
        load_csv(tmp_path / "absent.csv")


# --- the management command --------------------------------------------------------------


def _write_series(path, candles):
    rows = ["open_time,open,high,low,close,volume"]
    for i in range(len(candles)):
        rows.append(
            f"{int(candles.open_time_ms[i])},{float(candles.open[i])!r},{float(candles.high[i])!r},"
            f"{float(candles.low[i])!r},{float(candles.close[i])!r},1"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def test_command_json_and_output_files(tmp_path):
    from io import StringIO

    from django.core.management import call_command

    data = _write_series(tmp_path / "walk.csv", random_walk(3_000, seed=8))
    out = StringIO()
    call_command(
        "backtest", "ma_cross", "--data", str(data), "--json",
        "--params", '{"fast": 5, "slow": 20, "stop_loss_pct": 0.4, "take_profit_pct": 0.8}',
        "--risk-value", "2", "--out", str(tmp_path / "res" / "ma"), stdout=out,
    )  # fmt: skip
    summary = json.loads(out.getvalue())
    direct = run_backtest(
        get_strategy(
            "ma_cross", {"fast": 5, "slow": 20, "stop_loss_pct": 0.4, "take_profit_pct": 0.8}
        ),
        load_csv(data),
        BacktestConfig(risk_value=Decimal(2)),
    )
    assert summary["trades"] == len(direct.trades) > 0
    assert summary["net_pnl"] == str(direct.net_pnl)
    assert summary["candles"] == 3_000 and summary["candles_per_second"] > 0
    trades_csv = (tmp_path / "res" / "ma.csv").read_text().splitlines()
    assert trades_csv[0].startswith("number,side,entry_time")
    assert len(trades_csv) == 1 + summary["trades"]
    assert (tmp_path / "res" / "ma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_refuses_bad_input_clearly(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    bad = tmp_path / "bad.csv"
    bad.write_text("open_time,open,high,low,close\n1677628800,1,1,1,1\n1677628860,1,oops,1,1\n")
    with pytest.raises(CommandError, match="line 3"):
        call_command("backtest", "ma_cross", "--data", str(bad))
    with pytest.raises(CommandError, match="unknown strategy 'nope'"):
        call_command("backtest", "nope", "--data", str(bad))
    with pytest.raises(CommandError, match="bad parameter slow"):
        call_command("backtest", "ma_cross", "--data", str(bad), "--params", '{"slow": 1}')
    with pytest.raises(CommandError, match="--params is not valid JSON"):
        call_command("backtest", "ma_cross", "--data", str(bad), "--params", "{")
