"""Candles as Deribit's chart endpoints show them: 1-minute candles built from price points,
aggregated on request to any of Deribit's resolutions (1 ... 720 minutes, 1D).

``get_tradingview_chart_data`` answers the candles whose open time lies in [start, end],
including the one still forming, as Deribit does; ``chart.trades.*`` pushes the forming candle
after each price point (a new ``tick`` means the previous candle closed).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps.brokers.base import Candle

MINUTE_MS = 60_000


@dataclass(slots=True)
class Bar:
    tick: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def to_deribit(self) -> dict[str, Any]:
        """The ``chart.trades`` payload; volume in the base coin, cost in the quote."""
        return {
            "tick": self.tick,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "cost": self.volume * self.close,
        }


class ChartBook:
    """1-minute bars per instrument, kept in open-time order."""

    def __init__(self) -> None:
        self._bars: dict[str, list[Bar]] = {}
        self._ticks: dict[str, list[int]] = {}

    def add_candle(self, instrument: str, candle: Candle, *, scale: Decimal = Decimal(1)) -> None:
        """Add a whole candle (history); ``scale`` converts prices (ETH from a BTC file)."""
        bars = self._bars.setdefault(instrument, [])
        ticks = self._ticks.setdefault(instrument, [])
        tick = candle.open_time_ms - candle.open_time_ms % MINUTE_MS
        bar = Bar(
            tick,
            _d(candle.open) * scale,
            _d(candle.high) * scale,
            _d(candle.low) * scale,
            _d(candle.close) * scale,
            _d(candle.volume),
        )
        if ticks and ticks[-1] >= tick:
            index = bisect.bisect_left(ticks, tick)
            if ticks[index] == tick:
                bars[index] = bar
                return
        bars.append(bar)
        ticks.append(tick)

    def record(
        self, instrument: str, timestamp_ms: int, price: Decimal, volume: Decimal = Decimal(0)
    ) -> bool:
        """Add one price point; True when it opened a new 1-minute bar."""
        bars = self._bars.setdefault(instrument, [])
        ticks = self._ticks.setdefault(instrument, [])
        tick = timestamp_ms - timestamp_ms % MINUTE_MS
        if bars and bars[-1].tick >= tick:
            bar = bars[-1]
            bar.high = max(bar.high, price)
            bar.low = min(bar.low, price)
            bar.close = price
            bar.volume += volume
            return False
        bars.append(Bar(tick, price, price, price, price, volume))
        ticks.append(tick)
        return True

    def last(self, instrument: str) -> Bar | None:
        bars = self._bars.get(instrument)
        return bars[-1] if bars else None

    def bars(
        self,
        instrument: str,
        start_ms: int,
        end_ms: int,
        resolution_minutes: int,
        *,
        until_ms: int | None = None,
    ) -> list[Bar]:
        """Bars of ``resolution_minutes`` whose open time lies in [start_ms, end_ms].

        Minutes without a price point are filled with flat bars at the previous close, as
        Deribit does, between recorded bars and (when ``until_ms`` is given) up to that time.
        """
        ticks = self._ticks.get(instrument, [])
        bars = self._bars.get(instrument, [])
        width = resolution_minutes * MINUTE_MS
        aligned = start_ms - start_ms % width
        first = bisect.bisect_left(ticks, aligned)
        last = bisect.bisect_right(ticks, end_ms + width)
        horizon = end_ms + width
        minutes: list[Bar] = []
        previous = bars[first - 1] if first > 0 else None
        for bar in bars[first:last]:
            if previous is not None:
                _fill(minutes, previous, bar.tick, aligned)
            minutes.append(bar)
            previous = bar
        if until_ms is not None and previous is not None:
            _fill(
                minutes,
                previous,
                min(until_ms - until_ms % MINUTE_MS + MINUTE_MS, horizon),
                aligned,
            )
        out: list[Bar] = []
        for bar in minutes:
            tick = bar.tick - bar.tick % width
            if out and out[-1].tick == tick:
                merged = out[-1]
                merged.high = max(merged.high, bar.high)
                merged.low = min(merged.low, bar.low)
                merged.close = bar.close
                merged.volume += bar.volume
            else:
                out.append(Bar(tick, bar.open, bar.high, bar.low, bar.close, bar.volume))
        return [bar for bar in out if start_ms <= bar.tick <= end_ms]

    def forming(self, instrument: str, resolution_minutes: int) -> Bar | None:
        """The latest bar of that resolution (the one still forming)."""
        last = self.last(instrument)
        if last is None:
            return None
        width = resolution_minutes * MINUTE_MS
        tick = last.tick - last.tick % width
        found = self.bars(instrument, tick, tick, resolution_minutes)
        return found[-1] if found else None

    def chart_data(
        self,
        instrument: str,
        start_ms: int,
        end_ms: int,
        resolution_minutes: int,
        *,
        until_ms: int | None = None,
    ) -> dict[str, Any]:
        bars = self.bars(instrument, start_ms, end_ms, resolution_minutes, until_ms=until_ms)
        return {
            "status": "ok" if bars else "no_data",
            "ticks": [bar.tick for bar in bars],
            "open": [bar.open for bar in bars],
            "high": [bar.high for bar in bars],
            "low": [bar.low for bar in bars],
            "close": [bar.close for bar in bars],
            "volume": [bar.volume for bar in bars],
            "cost": [bar.volume * bar.close for bar in bars],
        }

    def clear(self) -> None:
        self._bars.clear()
        self._ticks.clear()


MAX_FILLER_MINUTES = 100_000  # a bound on one answer's flat bars (about 70 days)


def _fill(out: list[Bar], previous: Bar, before_tick: int, from_tick: int) -> None:
    """Append flat bars at ``previous.close`` for the minutes after ``previous`` up to (not
    including) ``before_tick``, skipping those before ``from_tick``."""
    tick = max(previous.tick + MINUTE_MS, from_tick - from_tick % MINUTE_MS)
    count = 0
    while tick < before_tick and count < MAX_FILLER_MINUTES:
        close = previous.close
        out.append(Bar(tick, close, close, close, close, Decimal(0)))
        tick += MINUTE_MS
        count += 1


def _d(value: float) -> Decimal:
    return Decimal(repr(value))
