"""Price-action template: candle patterns at swing levels.

Support is the latest confirmed swing low, resistance the latest confirmed swing high
(pivots ``swing`` candles each side, known ``swing`` candles later). Long when the last
candle reaches within ``tolerance_pct`` of support, closes above it, and is a bullish
engulfing (bullish body engulfing the previous bearish body) or a hammer (lower wick ≥ 2 ×
body, upper wick ≤ body). Short mirrors at resistance with a bearish engulfing or a shooting
star. Stop beyond the candle's extreme or the level (whichever is further) plus
``stop_buffer_pct``; target ``take_profit_r`` times the risk.

A template: simple, readable rules to start from, not a tuned system.
"""

from __future__ import annotations

from apps.brokers.base import Side
from apps.strategies import indicators as ind
from apps.strategies.base import BaseStrategy, Candles, ParamSpec, ParamType, Signal


def bullish_pattern(o: float, h: float, lo: float, c: float, po: float, pc: float) -> str | None:
    body = abs(c - o)
    if c > o and pc < po and c >= po and o <= pc:
        return "bullish engulfing"
    if body > 0 and min(o, c) - lo >= 2 * body and h - max(o, c) <= body:
        return "hammer"
    return None


def bearish_pattern(o: float, h: float, lo: float, c: float, po: float, pc: float) -> str | None:
    body = abs(c - o)
    if c < o and pc > po and c <= po and o >= pc:
        return "bearish engulfing"
    if body > 0 and h - max(o, c) >= 2 * body and min(o, c) - lo <= body:
        return "shooting star"
    return None


class PriceAction(BaseStrategy):
    id = "price_action"
    name = "Price Action"
    description = "Engulfing candles, hammers and shooting stars at swing support/resistance."
    params_schema = (
        ParamSpec("swing", ParamType.INT, 3, 1, 50, "Candles each side of a swing pivot"),
        ParamSpec("tolerance_pct", ParamType.FLOAT, 0.1, 0, 5, "How near the level counts, %"),
        ParamSpec("stop_buffer_pct", ParamType.FLOAT, 0.05, 0, 5, "Stop beyond the level, %"),
        ParamSpec(
            "take_profit_r", ParamType.FLOAT, 2.0, 0.1, 20, "Target in multiples of the risk"
        ),
    )

    @property
    def warmup(self) -> int:
        return 4 * self.params["swing"] + 2

    @property
    def history(self) -> int:
        return max(200, self.warmup)

    def decide(self, candles: Candles) -> Signal | None:
        p = self.params
        s, tol = p["swing"], p["tolerance_pct"] / 100
        support = ind.last_confirmed(candles.low, ind.swing_lows(candles.low, s, s), s)[-1]
        resistance = ind.last_confirmed(candles.high, ind.swing_highs(candles.high, s, s), s)[-1]
        self.note(support=support, resistance=resistance)
        o, h, lo, c = (
            float(a[-1]) for a in (candles.open, candles.high, candles.low, candles.close)
        )
        po, pc = float(candles.open[-2]), float(candles.close[-2])
        at_support = self.look(
            "at support", round(support, 2), lo <= support * (1 + tol) and c > support
        )
        at_resistance = self.look(
            "at resistance", round(resistance, 2), h >= resistance * (1 - tol) and c < resistance
        )
        if at_support and (pattern := bullish_pattern(o, h, lo, c, po, pc)):
            self.look("pattern", pattern, True)
            self._level = float(support)
            return self.make_signal(Side.BUY, candles, f"{pattern} at support {support:.2f}")
        if at_resistance and (pattern := bearish_pattern(o, h, lo, c, po, pc)):
            self.look("pattern", pattern, True)
            self._level = float(resistance)
            return self.make_signal(Side.SELL, candles, f"{pattern} at resistance {resistance:.2f}")
        self.look("pattern", None, False)
        return None

    def calculate_stop_loss(self, entry: float, side: Side, candles: Candles) -> float:
        buffer = self.params["stop_buffer_pct"] / 100
        if side is Side.BUY:
            stop = min(float(candles.low[-1]), self._level) * (1 - buffer)
            return min(stop, entry * (1 - 0.0005))
        stop = max(float(candles.high[-1]), self._level) * (1 + buffer)
        return max(stop, entry * (1 + 0.0005))

    def calculate_take_profit(
        self, entry: float, side: Side, stop: float, candles: Candles
    ) -> float:
        risk = abs(entry - stop) * self.params["take_profit_r"]
        return entry + risk if side is Side.BUY else entry - risk
