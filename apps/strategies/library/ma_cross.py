"""Moving-average cross: the original SMA-Cross, on closed candles.

Rules (original ``SimpleMovingAverageCrossStrategy``): a bullish cross — previous fast SMA at or
below the previous slow SMA and now above it — opens a long; a bearish cross opens a short.
Only when flat (the runner does not analyse while a position is open); a cross that happens
while a position is open is not acted on later. Stop and target are percentages of the entry
(the last close): 2 % and 6 % by default. Confidence = min(|fast − slow| / slow × 2000, 100).

Chosen where the original differs: it ran on 5-minute candles; here the timeframe is the
candles you feed (1 minute in the runner and the bundled data), so the bench compares like
with like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from apps.brokers.base import Side
from apps.strategies import indicators as ind
from apps.strategies.base import BaseStrategy, Candles, ParamError, ParamSpec, ParamType, Signal
from apps.strategies.base import percent_params as _pct


class MovingAverageCross(BaseStrategy):
    id = "ma_cross"
    name = "Moving Average Cross"
    description = "SMA fast over SMA slow: long on a bullish cross, short on a bearish one."
    params_schema = (
        ParamSpec("fast", ParamType.INT, 10, 2, 500, "Fast SMA period (candles)"),
        ParamSpec("slow", ParamType.INT, 30, 3, 2000, "Slow SMA period (candles)"),
        *_pct(2.0, 6.0),
    )

    def check_params(self, params: dict[str, Any]) -> None:
        if params["fast"] >= params["slow"]:
            raise ParamError("fast", "must be shorter than slow")

    @property
    def warmup(self) -> int:
        return int(self.params["slow"]) + 1

    def _averages(self, close: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        return ind.sma(close, self.params["fast"]), ind.sma(close, self.params["slow"])

    def decide(self, candles: Candles) -> Signal | None:
        fast, slow = self._averages(candles.close)
        self.note(sma_fast=fast[-1], sma_slow=slow[-1])
        above = self.look("fast above slow", round(fast[-1] - slow[-1], 6), fast[-1] > slow[-1])
        was_above = fast[-2] > slow[-2]
        bullish = self.look(
            "bullish cross", f"{fast[-2]:.2f}<={slow[-2]:.2f}", above and not was_above
        )
        below = fast[-1] < slow[-1]
        bearish = self.look(
            "bearish cross", f"{fast[-2]:.2f}>={slow[-2]:.2f}", below and fast[-2] >= slow[-2]
        )
        if not (bullish or bearish):
            return None
        strength = min(abs(fast[-1] - slow[-1]) / slow[-1] * 100 * 20, 100.0)
        side = Side.BUY if bullish else Side.SELL
        direction = "above" if bullish else "below"
        reason = f"SMA {self.params['fast']} crossed {direction} SMA {self.params['slow']}"
        return self.make_signal(side, candles, reason, strength)

    def precompute(self, candles: Candles) -> NDArray[np.int8]:
        fast, slow = self._averages(candles.close)
        out = np.zeros(len(candles), dtype=np.int8)
        out[ind.crossed_above(fast, slow)] = 1
        out[ind.crossed_below(fast, slow)] = -1
        return out
