"""Razor: the original production strategy (backend scoring of ``razor-executor.ts``).

Separate long and short scores on 1-minute closed candles; a side signals when its score is
strictly above the other's and at least ``min_score`` (58). Points:

- no signal at the daily trade limit or with volatility outside [min_vol, max_vol];
- +8 both if 0.08 ≤ volatility ≤ 0.6;
- RSI < oversold: long += min(35 + (oversold − RSI), 48), then +20 if EMA8 > EMA21 else +5;
  RSI > overbought mirrors for the short;
- 5-candle momentum: +15 long above +0.05 %, +15 short below −0.05 %;
- +6 both if 0.03 ≤ ATR% ≤ 0.8;
- multi-timeframe trend (off by default): ±10 at trend score ±3, ±6 at ±2;
- pullback ready: +5 both; without it −5 both when ``advanced_filters`` is on;
- range compression (last range < 0.6 × mean of the last 12): +4 both;
- when both scores are below 20: +25 to the side whose EMA8/EMA21 gap exceeds 0.02 %.
Strength = min(score, 100). Stop 0.5 %, target 0.65 % from the entry (the last close);
with ``adaptive_risk`` the stop × 0.85 when ATR% < 0.05 and the target × 1.15 when ATR% > 0.4
(and × 1.05 at a full multi-timeframe alignment).

Rules chosen where the original was vague or defective:
- EMA8/EMA21 are SMA-seeded over the last ``history`` (200) candles; the warm-up is 21 candles
  (the original fell back to an SMA on short data).
- RSI14 is the simple average of the last 14 gains and losses, as the original computed.
- Volatility = max(stdev of the last 20 closes / their mean, (max − min) / mean of the same
  closes), in %, floored at 0.01.
- ATR14 is Wilder's over the candles' highs and lows (the original only had live ones).
- The "5m"/"15m" series were wall-clock snapshots; here they are every 5th / 15th closed
  1-minute close counted back from the last candle. The trend score is the sum over 1m, 5m
  and 15m of +1 (EMA8 > EMA21) or −1 (EMA8 < EMA21).
- Pullback ready: over the last 10 closes the move from the first close to the extreme is
  ≥ 0.1 % and the retrace from that extreme is ≥ 0.15 of the move.
- 5-candle momentum is the % change from the close 5 candles back.
- The daily limit counts trades by the UTC day of their entry (the original reset 24 h after
  start); the cooldown (1 min) runs from the exit of the last trade.
- Break-even stop moves are not part of the signal; they belong to the position manager and
  are not implemented here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
from apps.strategies.library._common import Cooldown, DailyLimit


def volatility_pct(close: np.ndarray, n: int = 20) -> float:
    window = close[-n:]
    mean = float(window.mean())
    spread = float(window.std()) / mean * 100
    span = float(window.max() - window.min()) / mean * 100
    return max(spread, span, 0.01)


def pullback_ready(close: np.ndarray, n: int = 10) -> bool:
    window = close[-n:]
    first, last = float(window[0]), float(window[-1])
    if last >= first:
        extreme = float(window.max())
        impulse, retrace = extreme - first, extreme - last
    else:
        extreme = float(window.min())
        impulse, retrace = first - extreme, last - extreme
    if impulse <= 0:
        return False
    return impulse / first * 100 >= 0.1 and retrace / impulse >= 0.15


def trend_score(close: np.ndarray) -> int:
    score = 0
    for step in (1, 5, 15):
        series = close[::-1][::step][::-1]
        if len(series) < 21:
            continue
        fast, slow = ind.ema(series, 8)[-1], ind.ema(series, 21)[-1]
        score += 1 if fast > slow else -1 if fast < slow else 0
    return score


class Razor(BaseStrategy):
    id = "razor"
    name = "Razor"
    description = "Scored mean reversion on RSI, EMA trend, momentum and volatility (production)."
    params_schema = (
        *percent_params(0.5, 0.65),
        ParamSpec("rsi_oversold", ParamType.FLOAT, 40.0, 1, 50, "RSI below this scores long"),
        ParamSpec("rsi_overbought", ParamType.FLOAT, 60.0, 50, 99, "RSI above this scores short"),
        ParamSpec("min_vol", ParamType.FLOAT, 0.01, 0, 100, "Minimum volatility, %"),
        ParamSpec("max_vol", ParamType.FLOAT, 5.0, 0, 100, "Maximum volatility, %"),
        ParamSpec("min_score", ParamType.FLOAT, 58.0, 0, 200, "Score needed to signal"),
        ParamSpec("max_daily_trades", ParamType.INT, 150, 1, 10_000, "Trades per UTC day"),
        ParamSpec("cooldown_minutes", ParamType.INT, 1, 0, 1440, "Pause after a closed trade"),
        ParamSpec("use_multi_timeframe", ParamType.BOOL, False, help="Score the 5m/15m trend"),
        ParamSpec("advanced_filters", ParamType.BOOL, False, help="Penalise missing pullbacks"),
        ParamSpec("adaptive_risk", ParamType.BOOL, False, help="Scale stop/target with ATR%"),
    )

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._daily = DailyLimit(self.params["max_daily_trades"])
        self._cooldown = Cooldown(self.params["cooldown_minutes"])
        self._trend = 0
        self._atr_pct = float("nan")

    def check_params(self, params: dict[str, Any]) -> None:
        if params["min_vol"] >= params["max_vol"]:
            raise ParamError("min_vol", "must be below max_vol")

    @property
    def warmup(self) -> int:
        return 21

    @property
    def history(self) -> int:
        return 400 if self.params["use_multi_timeframe"] else 200

    def scores(self, candles: Candles) -> tuple[float, float]:
        p = self.params
        close = candles.close
        ema8, ema21 = ind.ema(close, 8)[-1], ind.ema(close, 21)[-1]
        rsi = ind.rsi(close, 14, method="simple")[-1]
        vol = volatility_pct(close)
        atr_pct = ind.atr(candles.high, candles.low, close, 14)[-1] / close[-1] * 100
        momentum = ind.pct_change(close, 5)[-1]
        self._atr_pct = atr_pct
        self.note(
            ema8=ema8, ema21=ema21, rsi=rsi, volatility=vol, atr_pct=atr_pct, momentum=momentum
        )
        long = short = 0.0
        if self.look("volatility 0.08..0.6 %", round(vol, 4), 0.08 <= vol <= 0.6):
            long += 8
            short += 8
        if self.look("RSI oversold", round(rsi, 2), rsi < p["rsi_oversold"]):
            long += min(35 + (p["rsi_oversold"] - rsi), 48) + (20 if ema8 > ema21 else 5)
        if self.look("RSI overbought", round(rsi, 2), rsi > p["rsi_overbought"]):
            short += min(35 + (rsi - p["rsi_overbought"]), 48) + (20 if ema8 < ema21 else 5)
        if self.look("momentum > +0.05 %", round(momentum, 4), momentum > 0.05):
            long += 15
        if self.look("momentum < -0.05 %", round(momentum, 4), momentum < -0.05):
            short += 15
        if self.look("ATR 0.03..0.8 %", round(atr_pct, 4), 0.03 <= atr_pct <= 0.8):
            long += 6
            short += 6
        if p["use_multi_timeframe"]:
            self._trend = trend_score(close)
            self.look("trend score", self._trend, abs(self._trend) >= 2)
            bonus = {3: 10, 2: 6}.get(abs(self._trend), 0)
            if self._trend > 0:
                long += bonus
            elif self._trend < 0:
                short += bonus
        if self.look("pullback ready", "", pullback_ready(close)):
            long += 5
            short += 5
        elif p["advanced_filters"]:
            long -= 5
            short -= 5
        ranges = candles.high[-12:] - candles.low[-12:]
        if self.look(
            "range compression", round(float(ranges[-1]), 2), ranges[-1] < 0.6 * ranges.mean()
        ):
            long += 4
            short += 4
        if long < 20 and short < 20:
            gap = (ema8 - ema21) / ema21 * 100
            if self.look("EMA cross bonus", round(gap, 4), abs(gap) > 0.02):
                if gap > 0:
                    long += 25
                else:
                    short += 25
        return long, short

    def decide(self, candles: Candles) -> Signal | None:
        p = self.params
        now = int(candles.open_time_ms[-1])
        if not self.look("daily limit", self._daily.count(now), not self._daily.reached(now)):
            return None
        if not self.look("cooldown over", self._cooldown.until_ms, not self._cooldown.active(now)):
            return None
        vol = volatility_pct(candles.close)
        if not self.look("volatility in range", round(vol, 4), p["min_vol"] <= vol <= p["max_vol"]):
            return None
        long, short = self.scores(candles)
        self.note(long_score=long, short_score=short)
        best = max(long, short)
        side = Side.BUY if long > short else Side.SELL
        if not self.look(
            "score", f"long {long:g} / short {short:g}", long != short and best >= p["min_score"]
        ):
            return None
        return self.make_signal(side, candles, f"Razor {side} score {best:g}", min(best, 100.0))

    def calculate_stop_loss(self, entry: float, side: Side, candles: Candles) -> float:
        pct = self.params["stop_loss_pct"] / 100
        if self.params["adaptive_risk"] and self._atr_pct < 0.05:
            pct *= 0.85
        return entry * (1 - pct) if side is Side.BUY else entry * (1 + pct)

    def calculate_take_profit(
        self, entry: float, side: Side, stop: float, candles: Candles
    ) -> float:
        pct = self.params["take_profit_pct"] / 100
        if self.params["adaptive_risk"]:
            if self._atr_pct > 0.4:
                pct *= 1.15
            if abs(self._trend) == 3:
                pct *= 1.05
        return entry * (1 + pct) if side is Side.BUY else entry * (1 - pct)

    def on_trade_closed(self, trade: ClosedTrade) -> None:
        super().on_trade_closed(trade)
        self._daily.record(trade)
        self._cooldown.record(trade)
