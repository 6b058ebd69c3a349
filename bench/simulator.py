"""Candles per second the exchange simulator replays with 100 resting orders.

Replays the shared 30,240-candle BTC file (or, when it is absent, a synthetic random walk of the
same length) into one engine on BTC-PERPETUAL while 100 orders rest around the price: buy and sell
limits, buy and sell stops, 0.2 % to 15 % away. Whenever orders fill, new ones are placed around
the new price so that 100 rest again. Prints the figures of two ways to replay:
  - ``step_candle``   one call per candle (what the feed and a per-candle backtest do)
  - ``replay_arrays`` numpy arrays, quiet stretches skipped in bulk

Usage: .venv/bin/python bench/simulator.py [--repeat 3] [--orders 100]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.brokers.base import Candle  # noqa: E402
from apps.brokers.simulator.engine import ExchangeEngine  # noqa: E402
from apps.brokers.simulator.feed import CandleArrays, load_candles  # noqa: E402

SHARED_FILE = ROOT.parent / "shared" / "data" / "btcusdt-1m-2023-03-01_21.csv"
INSTRUMENT = "BTC-PERPETUAL"
TARGET = 200_000


def synthetic_candles(count: int, seed: int = 7) -> list[Candle]:
    rng = random.Random(seed)
    price = 23_000.0
    candles = []
    for index in range(count):
        open_ = price
        close = max(1000.0, open_ * (1 + rng.gauss(0, 0.0008)))
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.0004)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.0004)))
        candles.append(Candle(1_677_628_800_000 + index * 60_000, open_, high, low, close, 1.0))
        price = close
    return candles


def top_up(engine: ExchangeEngine, rng: random.Random, orders: int) -> int:
    """Place orders around the current price until ``orders`` rest; returns how many placed."""
    placed = 0
    price = engine.last_price(INSTRUMENT)
    tick = 0.5
    while engine.open_order_count < orders:
        distance = rng.uniform(0.002, 0.15)
        kind = rng.randrange(4)
        if kind == 0:
            engine.buy(INSTRUMENT, 100, type="limit", price=_tick(price * (1 - distance), tick))
        elif kind == 1:
            engine.sell(INSTRUMENT, 100, type="limit", price=_tick(price * (1 + distance), tick))
        elif kind == 2:
            level = _tick(price * (1 + distance), tick)
            engine.buy(
                INSTRUMENT, 100, type="stop_market", trigger_price=level, trigger="last_price"
            )
        else:
            level = _tick(price * (1 - distance), tick)
            engine.sell(
                INSTRUMENT, 100, type="stop_market", trigger_price=level, trigger="last_price"
            )
        placed += 1
    return placed


def _tick(value: float, tick: float) -> Decimal:
    return Decimal(round(value / tick)) * Decimal(str(tick))


def new_engine(first: Candle) -> ExchangeEngine:
    return ExchangeEngine(
        balances={"BTC": Decimal(1000)}, prices={INSTRUMENT: first.open}, now_ms=0
    )


def run_step_candle(candles: list[Candle], orders: int, seed: int) -> tuple[float, int, int]:
    engine = new_engine(candles[0])
    rng = random.Random(seed)
    top_up(engine, rng, orders)
    step = engine.step_candle
    placed = 0
    version = engine.version
    started = time.perf_counter()
    for candle in candles:
        step(INSTRUMENT, candle.open, candle.high, candle.low, candle.close, candle.open_time_ms)
        if engine.version != version:
            placed += top_up(engine, rng, orders)
            version = engine.version
    elapsed = time.perf_counter() - started
    return elapsed, engine.trade_count, placed


def run_arrays(candles: list[Candle], orders: int, seed: int) -> tuple[float, int, int]:
    arrays = CandleArrays.from_candles(candles)
    engine = new_engine(candles[0])
    rng = random.Random(seed)
    top_up(engine, rng, orders)
    placed = 0
    index = 0
    started = time.perf_counter()
    while index < len(arrays):
        index = engine.replay_arrays(
            INSTRUMENT,
            arrays.times,
            arrays.opens,
            arrays.highs,
            arrays.lows,
            arrays.closes,
            index,
            until_change=True,
        )
        placed += top_up(engine, rng, orders)
    elapsed = time.perf_counter() - started
    return elapsed, engine.trade_count, placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best is shown")
    parser.add_argument("--orders", type=int, default=100, help="resting orders")
    args = parser.parse_args()

    if SHARED_FILE.exists():
        candles = load_candles(SHARED_FILE)
        source = f"{SHARED_FILE.name} ({len(candles):,} candles)"
    else:
        candles = synthetic_candles(30_240)
        source = f"synthetic random walk ({len(candles):,} candles; shared file absent)"
    print(f"data: {source}; {args.orders} resting orders on {INSTRUMENT}")
    for name, method in (("step_candle", run_step_candle), ("replay_arrays", run_arrays)):
        best = None
        for attempt in range(args.repeat):
            elapsed, fills, placed = method(candles, args.orders, seed=attempt)
            if best is None or elapsed < best[0]:
                best = (elapsed, fills, placed)
        assert best is not None
        elapsed, fills, placed = best
        rate = len(candles) / elapsed
        verdict = "meets" if rate >= TARGET else "BELOW"
        print(
            f"{name:>13}: {rate:>12,.0f} candles/s  ({elapsed * 1000:.1f} ms, {fills} fills, "
            f"{placed} orders re-placed; {verdict} the {TARGET:,}/s target)"
        )


if __name__ == "__main__":
    main()
