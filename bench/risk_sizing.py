"""Sizings per second of ``apps.risk.sizing.size_position`` (a backtest calls it on every signal).

Sizes 20,000 random trades (seeded) on each of the four Deribit perpetuals of the simulator's
table, percent and fixed risk, with and without fees, and prints per instrument: sizings per
second, microseconds per sizing, and how many were sized vs refused (by code).

Usage: .venv/bin/python bench/risk_sizing.py [--count 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.brokers.base import Side  # noqa: E402
from apps.brokers.simulator.instruments import DEFAULT_SPECS  # noqa: E402
from apps.risk.sizing import SizingRefused, size_position  # noqa: E402

PRICES = {"BTC": (20_000, 100_000), "ETH": (1_000, 5_000)}


def scenarios(spec, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    low, high = PRICES[spec.base_currency]
    tick = spec.tick_size
    out = []
    for _ in range(count):
        entry = tick * int(Decimal(rng.uniform(low, high)) / tick)
        side = rng.choice([Side.BUY, Side.SELL])
        ticks = max(1, int(entry * Decimal(rng.uniform(0.002, 0.1)) / tick))
        stop = entry - ticks * tick if side is Side.BUY else entry + ticks * tick
        equity = Decimal("1") if spec.is_inverse else Decimal("100000")
        if spec.base_currency == "ETH" and spec.is_inverse:
            equity = Decimal("10")
        fixed = rng.random() < 0.5
        out.append(
            {
                "spec": spec,
                "side": side,
                "entry": entry,
                "stop": stop,
                "equity": equity,
                "mode": "fixed" if fixed else "percent",
                "value": Decimal(rng.randint(10, 500))
                if fixed
                else Decimal(rng.randint(1, 500)) / 100,
                "leverage_cap": Decimal(20),
                "include_fees": rng.random() < 0.5,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"size_position: {args.count} trades per instrument, best of {args.repeat}")
    for name, spec in DEFAULT_SPECS.items():
        cases = scenarios(spec, args.count, seed=5)
        best = float("inf")
        outcomes: Counter[str] = Counter()
        for _ in range(args.repeat):
            outcomes.clear()
            start = time.perf_counter()
            for case in cases:
                try:
                    size_position(**case)
                    outcomes["sized"] += 1
                except SizingRefused as refused:
                    outcomes[str(refused.code)] += 1
            best = min(best, time.perf_counter() - start)
        per_second = args.count / best
        detail = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        print(
            f"  {name:20s} {per_second:10,.0f} /s  {best / args.count * 1e6:7.1f} µs each  ({detail})"
        )


if __name__ == "__main__":
    main()
