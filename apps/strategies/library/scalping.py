"""Scalping ("EMA-RSI Scalper"), from the original frontend ``scalpingStrategy.ts``.

Buy when EMA9 > EMA21, 30 < RSI14 < 50 and |EMA9 − EMA21| / price > 0.0005; sell when
EMA9 < EMA21, 50 < RSI14 < 70 and the same gap. Confidence = 0.6 + 100 × gap + (50 − RSI)/100
for a buy ((RSI − 50)/100 for a sell) and must be ≥ 0.65. Stop and target 0.3 % from entry.

Rules chosen where the original was vague or defective:
- It sampled the ticker every 2 s and needed 50 ticks; here every closed candle is a sample,
  and the warm-up is 50 candles (EMAs over the last ``history`` = 200 candles, SMA-seeded;
  RSI is Wilder's).
- The 30 s cooldown becomes ``cooldown_candles`` (1) after a closed trade.
- The spread filter needs an order book that candles lack: not applied.
- The 5-minute maximum hold was enforced by closing at market in software; a bracket has no
  time exit, so it is not applied (stop and target close every trade).
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
    percent_params,
)
from apps.strategies.library._common import Cooldown


class Scalping(BaseStrategy):
    id = "scalping"
    name = "Scalping (EMA-RSI)"
    description = "EMA9/EMA21 trend with RSI in the pull-back half, tight stop and target."
    params_schema = (
        ParamSpec("ema_fast", ParamType.INT, 9, 2, 200, "Fast EMA period"),
        ParamSpec("ema_slow", ParamType.INT, 21, 3, 400, "Slow EMA period"),
        ParamSpec("rsi_period", ParamType.INT, 14, 2, 100, "RSI period"),
        ParamSpec("rsi_low", ParamType.FLOAT, 30.0, 1, 50, "RSI floor for a buy"),
        ParamSpec("rsi_high", ParamType.FLOAT, 70.0, 50, 99, "RSI ceiling for a sell"),
        ParamSpec("min_gap", ParamType.FLOAT, 0.0005, 0, 0.1, "Minimum |EMA gap| / price"),
        ParamSpec("min_confidence", ParamType.FLOAT, 0.65, 0, 5, "Confidence needed"),
        ParamSpec("cooldown_candles", ParamType.INT, 1, 0, 1440, "Pause after a closed trade"),
        *percent_params(0.3, 0.3),
    )

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._cooldown = Cooldown(self.params["cooldown_candles"] * self.timeframe)

    def check_params(self, params: dict[str, Any]) -> None:
        if params["ema_fast"] >= params["ema_slow"]:
            raise ParamError("ema_fast", "must be shorter than ema_slow")

    @property
    def warmup(self) -> int:
        return max(50, self.params["ema_slow"], self.params["rsi_period"] + 1)

    @property
    def history(self) -> int:
        return max(200, self.warmup)

    def decide(self, candles: Candles) -> Signal | None:
        p = self.params
        if not self.look(
            "cooldown over",
            self._cooldown.until_ms,
            not self._cooldown.active(int(candles.open_time_ms[-1])),
        ):
            return None
        close = candles.close
        price = float(close[-1])
        fast, slow = ind.ema(close, p["ema_fast"])[-1], ind.ema(close, p["ema_slow"])[-1]
        rsi = ind.rsi(close, p["rsi_period"])[-1]
        gap = abs(fast - slow) / price
        self.note(ema_fast=fast, ema_slow=slow, rsi=rsi, gap=gap)
        wide = self.look("EMA gap", round(gap, 6), gap > p["min_gap"])
        buy = self.look(
            "buy: EMA up, RSI 30-50", round(rsi, 2), fast > slow and p["rsi_low"] < rsi < 50
        )
        sell = self.look(
            "sell: EMA down, RSI 50-70", round(rsi, 2), fast < slow and 50 < rsi < p["rsi_high"]
        )
        if not wide or not (buy or sell):
            return None
        confidence = 0.6 + 100 * gap + ((50 - rsi) if buy else (rsi - 50)) / 100
        if not self.look("confidence", round(confidence, 4), confidence >= p["min_confidence"]):
            return None
        side = Side.BUY if buy else Side.SELL
        return self.make_signal(
            side,
            candles,
            f"Scalp {side}: RSI {rsi:.1f}, gap {gap:.5f}",
            min(confidence * 100, 100.0),
        )

    def on_trade_closed(self, trade: ClosedTrade) -> None:
        super().on_trade_closed(trade)
        self._cooldown.record(trade)
