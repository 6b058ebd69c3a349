"""Helpers to craft candle series for strategy and backtest tests (imported, not a conftest)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from apps.strategies.base import Candles

REAL_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "btcusdt-1m-2023-03-01_21.csv"
START_MS = 1_677_628_800_000  # 2023-03-01 00:00 UTC


def make_candles(
    closes: Sequence[float],
    opens: Sequence[float] | None = None,
    highs: Sequence[float] | None = None,
    lows: Sequence[float] | None = None,
    spread: float = 0.0005,
) -> Candles:
    """Candles from closes; by default each opens halfway from the previous close and its
    high/low sit ``spread`` beyond the body."""
    c = np.asarray(closes, dtype=float)
    prev = np.r_[c[0], c[:-1]]
    o = (prev + c) / 2 if opens is None else np.asarray(opens, dtype=float)
    h = np.maximum(o, c) * (1 + spread) if highs is None else np.asarray(highs, dtype=float)
    lo = np.minimum(o, c) * (1 - spread) if lows is None else np.asarray(lows, dtype=float)
    t = START_MS + np.arange(len(c), dtype=np.int64) * 60_000
    return Candles(t, o, h, lo, c, np.ones(len(c)))


def replay_signals(strategy, candles: Candles) -> list:
    """(index, signal) for each closed candle, feeding the last ``history`` candles each time."""
    out = []
    for i in range(1, len(candles) + 1):
        signal = strategy.analyze(candles.slice(max(0, i - strategy.history), i))
        if signal is not None:
            out.append((i - 1, signal))
    return out


def random_walk(n: int = 3_000, seed: int = 1) -> Candles:
    rng = np.random.default_rng(seed)
    closes = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    return make_candles(closes, spread=0.0004)


@pytest.fixture
def real_candles() -> Candles:
    if not REAL_DATA.exists():
        pytest.skip(f"{REAL_DATA} is not present")
    from apps.strategies.candle_csv import load_csv

    return load_csv(REAL_DATA)
