"""Vortex, from the original frontend ``vortexStrategy.ts`` (deleted in the old repository).

Setup on the previous closed candle: its low touched the lower Bollinger band (20, 2) and
RSI(4) was below 20 (a long). Trigger on the last closed candle, with the price above EMA100:
RSI(4) back above 20 (``rsi_cross``) or a bullish candle (``reversal_candle``); ``either``
(the default) accepts both. Stop = min(setup and trigger lows, lower band) × 0.997, at least 0.05 % away. Shorts mirror: below
EMA100, upper band touched, RSI(4) above 80, stop = max(highs, upper band) × 1.003.

Rules chosen where the original was vague or defective:
- "RSI4 < 20 and RSI crossing back above 20" cannot hold on one candle; the touch and the
  oversold RSI are the setup (previous candle), the cross or reversal candle is the trigger.
- The original took 50 % at 1R, moved the stop to break-even and trailed the rest. A single
  OTOCO bracket has one target, so the whole position exits at ``take_profit_r`` R (1R by
  default) and there is no trailing.
- RSI(4) is Wilder's; EMA100 SMA-seeded over the last ``history`` (200) candles.
- Daily loss / trade limits belong to the risk settings, not to the signal.
"""

from __future__ import annotations

from apps.brokers.base import Side
from apps.strategies import indicators as ind
from apps.strategies.base import BaseStrategy, Candles, ParamSpec, ParamType, Signal


class Vortex(BaseStrategy):
    id = "vortex"
    name = "Vortex"
    description = "Bollinger-band touch with RSI(4) extreme in the EMA100 trend, then a trigger."
    params_schema = (
        ParamSpec("ema_period", ParamType.INT, 100, 5, 500, "Trend EMA period"),
        ParamSpec("bb_period", ParamType.INT, 20, 5, 200, "Bollinger period"),
        ParamSpec("bb_std", ParamType.FLOAT, 2.0, 0.5, 5, "Bollinger width (stdevs)"),
        ParamSpec("rsi_period", ParamType.INT, 4, 2, 50, "RSI period"),
        ParamSpec("rsi_oversold", ParamType.FLOAT, 20.0, 1, 50, "Long setup below"),
        ParamSpec("rsi_overbought", ParamType.FLOAT, 80.0, 50, 99, "Short setup above"),
        ParamSpec(
            "trigger",
            ParamType.CHOICE,
            "either",
            help="What confirms the setup",
            choices=("rsi_cross", "reversal_candle", "either"),
        ),
        ParamSpec("stop_buffer_pct", ParamType.FLOAT, 0.3, 0, 5, "Stop beyond the low/band, %"),
        ParamSpec(
            "take_profit_r", ParamType.FLOAT, 1.0, 0.1, 20, "Target in multiples of the risk"
        ),
    )

    @property
    def warmup(self) -> int:
        p = self.params
        return max(p["ema_period"], p["bb_period"] + 1, p["rsi_period"] + 2)

    @property
    def history(self) -> int:
        return max(200, 2 * self.params["ema_period"])

    def decide(self, candles: Candles) -> Signal | None:
        p = self.params
        close, high, low, opn = candles.close, candles.high, candles.low, candles.open
        trend = ind.ema(close, p["ema_period"])[-1]
        lower, _, upper = ind.bollinger(close, p["bb_period"], p["bb_std"])
        rsi = ind.rsi(close, p["rsi_period"])
        self._lower, self._upper = float(lower[-2]), float(upper[-2])
        price = float(close[-1])
        self.note(ema=trend, bb_lower=lower[-1], bb_upper=upper[-1], rsi=rsi[-1])
        trigger = p["trigger"]
        long_setup = self.look(
            "long setup: lower band + RSI",
            round(rsi[-2], 2),
            low[-2] <= lower[-2] and rsi[-2] < p["rsi_oversold"],
        )
        short_setup = self.look(
            "short setup: upper band + RSI",
            round(rsi[-2], 2),
            high[-2] >= upper[-2] and rsi[-2] > p["rsi_overbought"],
        )
        up_trend = self.look("above EMA", round(trend, 2), price > trend)
        long_trigger = (trigger != "reversal_candle" and rsi[-1] > p["rsi_oversold"]) or (
            trigger != "rsi_cross" and close[-1] > opn[-1]
        )
        short_trigger = (trigger != "reversal_candle" and rsi[-1] < p["rsi_overbought"]) or (
            trigger != "rsi_cross" and close[-1] < opn[-1]
        )
        if long_setup and up_trend and self.look("long trigger", round(rsi[-1], 2), long_trigger):
            return self.make_signal(Side.BUY, candles, "Vortex long: band touch, RSI turn")
        if (
            short_setup
            and price < trend
            and self.look("short trigger", round(rsi[-1], 2), short_trigger)
        ):
            return self.make_signal(Side.SELL, candles, "Vortex short: band touch, RSI turn")
        return None

    def calculate_stop_loss(self, entry: float, side: Side, candles: Candles) -> float:
        buffer = self.params["stop_buffer_pct"] / 100
        if side is Side.BUY:
            stop = min(float(candles.low[-2:].min()), self._lower) * (1 - buffer)
            return min(stop, entry * (1 - 0.0005))
        stop = max(float(candles.high[-2:].max()), self._upper) * (1 + buffer)
        return max(stop, entry * (1 + 0.0005))

    def calculate_take_profit(
        self, entry: float, side: Side, stop: float, candles: Candles
    ) -> float:
        risk = abs(entry - stop) * self.params["take_profit_r"]
        return entry + risk if side is Side.BUY else entry - risk
