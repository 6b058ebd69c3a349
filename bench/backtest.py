"""Backtest speed: every strategy over the month of 1-minute candles, and the MA cross against
backtesting.py (same rules, same file). Prints candles per second, the ratio and trade counts.

    .venv/bin/python bench/backtest.py [--data PATH] [--repeat 3]

Times cover the backtest itself (not reading the CSV); each figure is the best of --repeat runs.
Rules given to backtesting.py: SMA 10 / SMA 30 on closes; when flat, buy on a bullish cross and
sell on a bearish one, stop 2 % and target 6 % from the close; orders fill on that close
(``trade_on_close=True``, as our market entry right after the candle closes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebaas.settings.test")

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "btcusdt-1m-2023-03-01_21.csv"


def best_of(repeat: int, run):
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def ours(data: Path, repeat: int) -> dict[str, tuple[float, int]]:
    from apps.strategies.backtest import run_backtest
    from apps.strategies.candle_csv import load_csv
    from apps.strategies.registry import get_strategy, strategy_ids

    candles = load_csv(data)
    figures = {}
    for sid in strategy_ids():
        runs = repeat if sid == "ma_cross" else 1
        seconds, result = best_of(runs, lambda sid=sid: run_backtest(get_strategy(sid), candles))
        figures[sid] = (len(candles) / seconds, len(result.trades))
        print(
            f"ours  {sid:<13} {len(candles):>7} candles {seconds:8.3f} s "
            f"{len(candles) / seconds:>12,.0f} candles/s  {len(result.trades):>5} trades",
            flush=True,
        )
    return figures


def backtesting_py(data: Path, repeat: int) -> tuple[float, int]:
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    frame = pd.read_csv(data)
    frame.index = pd.to_datetime(frame.pop("open_time"), utc=True)
    frame.columns = [c.capitalize() for c in frame.columns]

    def sma(values, n):
        return pd.Series(values).rolling(n).mean().to_numpy()

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 30)

        def next(self):
            if self.position:
                return
            close = self.data.Close[-1]
            if crossover(self.fast, self.slow):
                self.buy(size=0.5, sl=close * 0.98, tp=close * 1.06)
            elif crossover(self.slow, self.fast):
                self.sell(size=0.5, sl=close * 1.02, tp=close * 0.94)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bt = Backtest(
                frame, SmaCross, cash=10_000_000, commission=0.0005, trade_on_close=True,
                finalize_trades=True,
            )  # fmt: skip
            return bt.run()

    seconds, stats = best_of(repeat, run)
    trades = int(stats["# Trades"])
    print(
        f"backtesting.py ma_cross {len(frame):>7} candles {seconds:8.3f} s "
        f"{len(frame) / seconds:>12,.0f} candles/s  {trades:>5} trades",
        flush=True,
    )
    return len(frame) / seconds, trades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"no data at {args.data}")
    import django

    django.setup()
    figures = ours(args.data, args.repeat)
    theirs, their_trades = backtesting_py(args.data, args.repeat)
    mine, my_trades = figures["ma_cross"]
    print()
    print(f"MA cross: ours {mine:,.0f} candles/s, backtesting.py {theirs:,.0f} candles/s")
    print(
        f"ratio: {mine / theirs:.1f}x (target >= 10x); ours >= 500,000 candles/s: {mine >= 500_000}"
    )
    print(f"trades: ours {my_trades}, backtesting.py {their_trades}")


if __name__ == "__main__":
    main()
