"""Smart-money concepts template: break of structure, entered with the order block's stop.

Structure: confirmed swing highs and lows (a pivot ``swing`` candles each side, known only
``swing`` candles later). A bullish break of structure is a close above the latest confirmed
swing high by the last candle while the candle before closed at or below it. Its order block
is the last bearish candle (close < open) among the ``ob_lookback`` candles before the break;
without one there is no trade. Long at the close, stop below the order block's low (minus
``stop_buffer_pct``), target ``take_profit_r`` times the risk. Shorts mirror (a close below
the latest swing low, the last bullish candle before it, stop above its high).

A template: simple, readable rules to start from, not a tuned system.
"""

from __future__ import annotations

import numpy as np

from apps.brokers.base import Side
from apps.strategies import indicators as ind
from apps.strategies.base import BaseStrategy, Candles, ParamSpec, ParamType, Signal


class SmartMoney(BaseStrategy):
    id = "smc"
    name = "Smart Money Concepts"
    description = "Break of structure above/below a swing, stop behind the order block."
    params_schema = (
        ParamSpec("swing", ParamType.INT, 3, 1, 50, "Candles each side of a swing pivot"),
        ParamSpec("ob_lookback", ParamType.INT, 10, 1, 100, "Candles searched for the order block"),
        ParamSpec("stop_buffer_pct", ParamType.FLOAT, 0.05, 0, 5, "Stop beyond the block, %"),
        ParamSpec(
            "take_profit_r", ParamType.FLOAT, 2.0, 0.1, 20, "Target in multiples of the risk"
        ),
    )

    @property
    def warmup(self) -> int:
        return 4 * self.params["swing"] + self.params["ob_lookback"] + 2

    @property
    def history(self) -> int:
        return max(200, self.warmup)

    def _order_block(self, candles: Candles, bearish: bool) -> int | None:
        n = self.params["ob_lookback"]
        start = max(0, len(candles) - 1 - n)
        body = candles.close[start:-1] - candles.open[start:-1]
        hits = np.flatnonzero(body < 0 if bearish else body > 0)
        return start + int(hits[-1]) if len(hits) else None

    def decide(self, candles: Candles) -> Signal | None:
        s = self.params["swing"]
        close = candles.close
        high_level = ind.last_confirmed(candles.high, ind.swing_highs(candles.high, s, s), s)[-1]
        low_level = ind.last_confirmed(candles.low, ind.swing_lows(candles.low, s, s), s)[-1]
        self.note(swing_high=high_level, swing_low=low_level)
        up = self.look(
            "close breaks swing high", round(high_level, 2), close[-1] > high_level >= close[-2]
        )
        down = self.look(
            "close breaks swing low", round(low_level, 2), close[-1] < low_level <= close[-2]
        )
        if not (up or down):
            return None
        block = self._order_block(candles, bearish=up)
        if not self.look(
            "order block",
            block if block is None else int(candles.open_time_ms[block]),
            block is not None,
        ):
            return None
        self._block = (float(candles.low[block]), float(candles.high[block]))
        side = Side.BUY if up else Side.SELL
        return self.make_signal(
            side, candles, f"SMC {'bullish' if up else 'bearish'} break of structure"
        )

    def calculate_stop_loss(self, entry: float, side: Side, candles: Candles) -> float:
        buffer = self.params["stop_buffer_pct"] / 100
        low, high = self._block
        if side is Side.BUY:
            return min(low * (1 - buffer), entry * (1 - 0.0005))
        return max(high * (1 + buffer), entry * (1 + 0.0005))

    def calculate_take_profit(
        self, entry: float, side: Side, stop: float, candles: Candles
    ) -> float:
        risk = abs(entry - stop) * self.params["take_profit_r"]
        return entry + risk if side is Side.BUY else entry - risk
