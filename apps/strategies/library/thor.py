"""Thor ("VIPER" mean reversion), from the original ``thor-executor.ts``.

Long when RSI(4) ≤ 30 and the last close is below the Bollinger middle (20, 2); short when
RSI(4) ≥ 70 and the close is above it. Only while ATR(14) is within 0.05–0.8 % of the price
and under the daily trade limit (40). Stop: the lowest low (highest high for a short) of the
last 5 candles shifted 0.02 % further, and at least 0.05 % from the entry. Target: the
Bollinger middle; if that is not beyond the entry, 0.15 % from the entry.

Rules chosen where the original was vague or defective:
- RSI(4) is Wilder's (the original did not say); ATR(14) is Wilder's.
- Indicators run over the last ``history`` (100) closed candles; warm-up 30 candles.
- The bid/ask spread filter (≤ 0.05 %) needs an order book that candles do not carry; it is
  not applied by the strategy.
- The original had no post-trade cooldown; ``cooldown_candles`` (default 0) adds one.
- The daily limit counts trades by the UTC day of their entry.
"""

from __future__ import annotations

from typing import Any

from apps.brokers.base import Side
from apps.strategies import indicators as ind
from apps.strategies.base import (
    BaseStrategy,
    Candles,
    ClosedTrade,
    ParamError,
    ParamSpec,
    ParamType,
    Signal,
)
from apps.strategies.library._common import Cooldown, DailyLimit


class Thor(BaseStrategy):
    id = "thor"
    name = "Thor"
    description = "RSI(4) extremes against the Bollinger middle, within an ATR band."
    params_schema = (
        ParamSpec("rsi_period", ParamType.INT, 4, 2, 50, "RSI period"),
        ParamSpec("rsi_long", ParamType.FLOAT, 30.0, 1, 50, "Long when RSI at or below"),
        ParamSpec("rsi_short", ParamType.FLOAT, 70.0, 50, 99, "Short when RSI at or above"),
        ParamSpec("bb_period", ParamType.INT, 20, 5, 200, "Bollinger period"),
        ParamSpec("bb_std", ParamType.FLOAT, 2.0, 0.5, 5, "Bollinger width (stdevs)"),
        ParamSpec("atr_period", ParamType.INT, 14, 2, 100, "ATR period"),
        ParamSpec("atr_min_pct", ParamType.FLOAT, 0.05, 0, 10, "Minimum ATR, % of price"),
        ParamSpec("atr_max_pct", ParamType.FLOAT, 0.8, 0, 10, "Maximum ATR, % of price"),
        ParamSpec("swing_lookback", ParamType.INT, 5, 1, 100, "Candles for the swing stop"),
        ParamSpec("stop_buffer_pct", ParamType.FLOAT, 0.02, 0, 5, "Stop beyond the swing, %"),
        ParamSpec("min_stop_pct", ParamType.FLOAT, 0.05, 0.01, 10, "Minimum stop distance, %"),
        ParamSpec(
            "fallback_tp_pct",
            ParamType.FLOAT,
            0.15,
            0.01,
            10,
            "Target if the middle is not beyond entry, %",
        ),
        ParamSpec("max_daily_trades", ParamType.INT, 40, 1, 10_000, "Trades per UTC day"),
        ParamSpec("cooldown_candles", ParamType.INT, 0, 0, 1440, "Pause after a closed trade"),
    )

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._daily = DailyLimit(self.params["max_daily_trades"])
        self._cooldown = Cooldown(self.params["cooldown_candles"] * self.timeframe)
        self._middle = float("nan")

    def check_params(self, params: dict[str, Any]) -> None:
        if params["atr_min_pct"] >= params["atr_max_pct"]:
            raise ParamError("atr_min_pct", "must be below atr_max_pct")

    @property
    def warmup(self) -> int:
        p = self.params
        return max(30, p["bb_period"], p["rsi_period"] + 1, p["atr_period"], p["swing_lookback"])

    @property
    def history(self) -> int:
        return max(100, self.warmup)

    def decide(self, candles: Candles) -> Signal | None:
        p = self.params
        now = int(candles.open_time_ms[-1])
        if not self.look("daily limit", self._daily.count(now), not self._daily.reached(now)):
            return None
        if not self.look("cooldown over", self._cooldown.until_ms, not self._cooldown.active(now)):
            return None
        close = candles.close
        rsi = ind.rsi(close, p["rsi_period"])[-1]
        _, middle, _ = ind.bollinger(close, p["bb_period"], p["bb_std"])
        atr_pct = ind.atr(candles.high, candles.low, close, p["atr_period"])[-1] / close[-1] * 100
        self._middle = float(middle[-1])
        price = float(close[-1])
        self.note(rsi=rsi, bb_middle=self._middle, atr_pct=atr_pct)
        band = self.look(
            "ATR in band", round(atr_pct, 4), p["atr_min_pct"] <= atr_pct <= p["atr_max_pct"]
        )
        long = self.look(
            "RSI low, below middle", round(rsi, 2), rsi <= p["rsi_long"] and price < self._middle
        )
        short = self.look(
            "RSI high, above middle", round(rsi, 2), rsi >= p["rsi_short"] and price > self._middle
        )
        if not band or not (long or short):
            return None
        side = Side.BUY if long else Side.SELL
        return self.make_signal(
            side, candles, f"Thor {side}: RSI {rsi:.1f} vs middle {self._middle:.2f}"
        )

    def calculate_stop_loss(self, entry: float, side: Side, candles: Candles) -> float:
        p = self.params
        n = p["swing_lookback"]
        buffer, least = p["stop_buffer_pct"] / 100, p["min_stop_pct"] / 100
        if side is Side.BUY:
            return min(float(candles.low[-n:].min()) * (1 - buffer), entry * (1 - least))
        return max(float(candles.high[-n:].max()) * (1 + buffer), entry * (1 + least))

    def calculate_take_profit(
        self, entry: float, side: Side, stop: float, candles: Candles
    ) -> float:
        fallback = self.params["fallback_tp_pct"] / 100
        if side is Side.BUY:
            return self._middle if self._middle > entry else entry * (1 + fallback)
        return self._middle if self._middle < entry else entry * (1 - fallback)

    def on_trade_closed(self, trade: ClosedTrade) -> None:
        super().on_trade_closed(trade)
        self._daily.record(trade)
        self._cooldown.record(trade)
