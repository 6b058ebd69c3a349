"""Backtests that trade exactly like paper trading. Pure: no Django.

The same three parts as paper trading do the work:

- the strategy's own ``analyze`` decides on each closed candle while flat (never while a
  position is open), with the last ``history`` closed candles;
- ``apps.risk.sizing.size_position`` sizes each signal from the account's equity;
- the simulator's ``ExchangeEngine`` fills: the bracket is ONE OTOCO request built by the
  Deribit codec's ``bracket_params`` (market entry, reduce-only ``stop_market`` on the mark
  price, reduce-only ``take_limit``), and the engine walks each candle through its intra-candle
  path, so stops, targets, gaps and fees follow its rules.

Speed comes from skipping what cannot matter, never from different rules: while flat, a
strategy that offers ``precompute`` (decisions proven equal to ``analyze`` by its tests) jumps
straight to its next signal, and ``analyze`` is still called on that candle for the prices;
while a bracket rests, the engine's ``replay_arrays`` skips candles that reach no order.

Prices go on the tick before sizing and placing, by the runner's rule
(``Signal.prices_on_tick``: entry and target to the nearest tick, the stop away from the entry).
A signal whose target lands on the entry after rounding, or that sizing refuses, is recorded as
refused and the strategy stays flat.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from apps.brokers.base import BracketRequest, InstrumentSpec, Side
from apps.brokers.deribit.codec import bracket_params
from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.errors import ExchangeError
from apps.brokers.simulator.instruments import default_specs
from apps.risk.sizing import SizingRefused, size_position
from apps.strategies.base import BaseStrategy, Candles, ClosedTrade, Signal

ZERO = Decimal(0)
LIVE = ("open", "untriggered", "triggered")
Progress = Callable[[int, int], None]


class BacktestError(ValueError):
    """The backtest cannot run with this input (instrument, data, settings)."""


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    instrument: str = "BTC-PERPETUAL"
    equity: Decimal = Decimal("1")  # starting balance, settlement currency
    risk_mode: str = "percent"
    risk_value: Decimal = Decimal("1")
    leverage_cap: Decimal = Decimal("50")
    include_fees: bool = False
    slippage_ticks: int = 0
    fast: bool = True  # use the strategy's precompute() when it has one
    specs: dict[str, InstrumentSpec] | None = None


@dataclass(frozen=True, slots=True)
class BacktestTrade:
    number: int
    side: Side
    entry_time_ms: int
    exit_time_ms: int
    entry_price: Decimal
    exit_price: Decimal
    amount: Decimal
    pnl: Decimal  # realized, before fees, settlement currency
    fees: Decimal
    reason: str  # stop_loss, take_profit, end_of_data
    signal: str
    entry_index: int  # candle whose close produced the signal
    exit_index: int  # candle during which the position closed

    @property
    def net(self) -> Decimal:
        return self.pnl - self.fees

    def as_row(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "side": str(self.side),
            "entry_time_ms": self.entry_time_ms,
            "exit_time_ms": self.exit_time_ms,
            "entry_price": str(self.entry_price),
            "exit_price": str(self.exit_price),
            "amount": str(self.amount),
            "pnl": str(self.pnl),
            "fees": str(self.fees),
            "net": str(self.net),
            "reason": self.reason,
            "signal": self.signal,
        }


@dataclass(slots=True)
class BacktestResult:
    strategy: str
    params: dict[str, Any]
    instrument: str
    currency: str
    candles: int
    seconds: float
    start_equity: Decimal
    end_equity: Decimal
    trades: list[BacktestTrade]
    refused: list[tuple[int, str]]  # (candle index, why)
    equity_times_ms: np.ndarray = field(repr=False)
    equity_curve: np.ndarray = field(repr=False)  # mark-to-market at each close (float)
    exposure_candles: int = 0

    @property
    def net_pnl(self) -> Decimal:
        return sum((t.net for t in self.trades), ZERO)

    @property
    def fees(self) -> Decimal:
        return sum((t.fees for t in self.trades), ZERO)

    @property
    def win_rate(self) -> float:
        if not self.trades:
            return 0.0
        return round(100.0 * sum(1 for t in self.trades if t.net > 0) / len(self.trades), 4)

    @property
    def profit_factor(self) -> float | None:
        gains = sum((t.net for t in self.trades if t.net > 0), ZERO)
        losses = -sum((t.net for t in self.trades if t.net < 0), ZERO)
        if losses == 0:
            return None  # no losing trade: undefined, not infinite
        return round(float(gains / losses), 6)

    @property
    def max_drawdown(self) -> float:
        """Largest fall from a peak of the mark-to-market equity, in % of that peak."""
        if not len(self.equity_curve):
            return 0.0
        peaks = np.maximum.accumulate(self.equity_curve)
        return round(float(((peaks - self.equity_curve) / peaks).max() * 100), 6)

    @property
    def exposure(self) -> float:
        """Share of candles with a position open, %."""
        return round(100.0 * self.exposure_candles / self.candles, 4) if self.candles else 0.0

    @property
    def candles_per_second(self) -> float:
        return round(self.candles / self.seconds, 1) if self.seconds > 0 else math.inf

    def summary(self) -> dict[str, Any]:
        """The one JSON object of ``manage.py backtest --json``. Money as exact strings."""
        return {
            "strategy": self.strategy,
            "params": self.params,
            "instrument": self.instrument,
            "currency": self.currency,
            "trades": len(self.trades),
            "win_rate": self.win_rate,
            "net_pnl": str(self.net_pnl),
            "fees": str(self.fees),
            "profit_factor": self.profit_factor,
            "max_drawdown": self.max_drawdown,
            "exposure": self.exposure,
            "start_equity": str(self.start_equity),
            "end_equity": str(self.end_equity),
            "refused": len(self.refused),
            "candles": self.candles,
            "seconds": round(self.seconds, 6),
            "candles_per_second": self.candles_per_second,
        }


def bracket_prices(signal: Signal, tick: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(entry, stop, target) on the tick, by the runner's rule (``Signal.prices_on_tick``)."""
    return signal.prices_on_tick(tick)


class _Run:
    """One backtest in progress: the engine, the strategy and the trades so far."""

    def __init__(self, strategy: BaseStrategy, candles: Candles, config: BacktestConfig) -> None:
        specs = config.specs or default_specs()
        if config.instrument not in specs:
            raise BacktestError(f"unknown instrument {config.instrument!r}")
        self.spec = specs[config.instrument]
        self.currency = self.spec.settlement_currency
        self.strategy = strategy
        self.candles = candles
        self.config = config
        self.duration_ms = _resolution_ms(candles)
        if self.duration_ms != strategy.timeframe * 60_000:
            raise BacktestError(
                f"{strategy.id} decides on {strategy.timeframe}-minute candles; the data has "
                f"{self.duration_ms // 60_000}-minute candles"
            )
        self.engine = ExchangeEngine(
            {config.instrument: self.spec},
            {self.currency: config.equity},
            prices={config.instrument: float(candles.open[0])},
            slippage_ticks=config.slippage_ticks,
            now_ms=int(candles.open_time_ms[0]),
        )
        self.trades: list[BacktestTrade] = []
        self.refused: list[tuple[int, str]] = []
        self.bracket_seq = 0
        self.progress: Progress | None = None

    # --- flat: find the next signal ---------------------------------------------------------

    def step(self, start: int, stop: int) -> None:
        c = self.candles
        self.engine.replay_arrays(
            self.config.instrument,
            c.open_time_ms,
            c.open,
            c.high,
            c.low,
            c.close,
            start,
            stop,
            duration_ms=self.duration_ms,
        )

    def analyze_at(self, index: int) -> Signal | None:
        history = self.strategy.history
        return self.strategy.analyze(self.candles.slice(max(0, index + 1 - history), index + 1))

    def next_signal(
        self, first: int, stepped: int, candidates: np.ndarray | None
    ) -> tuple[int, Signal | None]:
        """The first candle at or after ``first`` whose close gives a signal (stepping the
        engine through it); ``(len, None)`` when the data ends first. ``candidates``: the
        only indices where ``analyze`` can signal (from ``precompute``), sorted."""
        n = len(self.candles)
        index = first
        while index < n:
            if candidates is not None:
                at = int(np.searchsorted(candidates, index))
                if at == len(candidates):
                    break
                index = int(candidates[at])
            if index >= stepped:
                self.step(stepped, index + 1)
                stepped = index + 1
            signal = self.analyze_at(index)
            if signal is not None:
                return index, signal
            index += 1
            if self.progress is not None and index % 2048 == 0:
                self.progress(index, n)
        if stepped < n:
            self.step(stepped, n)
        return n, None

    # --- a signal: size it, place the bracket, ride it --------------------------------------

    def enter(self, index: int, signal: Signal) -> dict[str, Any] | None:
        config = self.config
        entry, stop, target = bracket_prices(signal, self.spec.tick_size)
        if stop == entry or target == entry:
            self.refused.append((index, "stop or target on the entry after tick rounding"))
            return None
        equity = self.engine.account(self.currency).equity
        try:
            sized = size_position(
                spec=self.spec,
                side=signal.side,
                entry=entry,
                stop=stop,
                equity=equity,
                mode=config.risk_mode,
                value=config.risk_value,
                leverage_cap=config.leverage_cap,
                include_fees=config.include_fees,
            )
        except SizingRefused as exc:
            self.refused.append((index, f"{exc.code}: {exc.message}"))
            return None
        self.bracket_seq += 1
        request = BracketRequest(
            bracket_id=f"bt{self.bracket_seq}",
            instrument=config.instrument,
            side=signal.side,
            amount=sized.amount,
            stop_price=stop,
            take_profit_price=target,
        )
        method, params = bracket_params(request)
        params.pop("instrument_name")
        try:
            placed = self.engine.place_order(
                config.instrument, method.rsplit("/", 1)[1], params.pop("amount"), **params
            )
        except ExchangeError as exc:
            self.refused.append((index, f"exchange refused: {exc}"))
            return None
        if not placed.trades:  # a market entry always fills; never leave legs behind if not
            for order_id in (placed.order.order_id, *placed.order.oto_order_ids):
                if self.engine.get_order(order_id).order_state in LIVE:
                    self.engine.cancel(order_id)
            self.refused.append((index, "entry did not fill"))
            return None
        return {
            "primary": placed.order.order_id,
            "legs": placed.order.oto_order_ids,
            "label": request.labels[0].rsplit("-", 1)[0],
            "signal": signal,
            "index": index,
            "fills_from": self.engine.trade_count,
            "entry_trades": placed.trades,
        }

    def ride(self, bracket: dict[str, Any]) -> int:
        """Step candles until the position is closed; return the exit candle's index."""
        engine, c, n = self.engine, self.candles, len(self.candles)
        index = bracket["index"] + 1
        while engine.position(self.config.instrument).size != 0:
            if index >= n:
                engine.close_position(self.config.instrument)
                bracket["end_of_data"] = True
                for leg in bracket["legs"]:
                    if engine.get_order(leg).order_state in LIVE:
                        engine.cancel(leg)
                return n - 1
            index = engine.replay_arrays(
                self.config.instrument,
                c.open_time_ms,
                c.open,
                c.high,
                c.low,
                c.close,
                index,
                n,
                until_change=True,
                duration_ms=self.duration_ms,
            )
        return index - 1

    def record(self, bracket: dict[str, Any], exit_index: int) -> BacktestTrade:
        fills = self.engine.trades(self.config.instrument, start_ms=0)
        fills = list(bracket["entry_trades"]) + [
            f for f in fills[bracket["fills_from"] :] if f.order_id != bracket["primary"]
        ]
        entry_fills = [f for f in fills if f.order_id == bracket["primary"]]
        exit_fills = [f for f in fills if f.order_id != bracket["primary"]]
        signal: Signal = bracket["signal"]
        amount = sum((f.amount for f in entry_fills), ZERO)
        if bracket.get("end_of_data"):
            reason = "end_of_data"
        elif exit_fills and exit_fills[-1].label.endswith("-sl"):
            reason = "stop_loss"
        else:
            reason = "take_profit"
        trade = BacktestTrade(
            number=len(self.trades) + 1,
            side=signal.side,
            entry_time_ms=entry_fills[0].timestamp,
            exit_time_ms=exit_fills[-1].timestamp,
            entry_price=_average(self.spec, entry_fills),
            exit_price=_average(self.spec, exit_fills),
            amount=amount,
            pnl=sum((f.profit_loss for f in fills), ZERO),
            fees=sum((f.fee for f in fills), ZERO),
            reason=reason,
            signal=signal.reason,
            entry_index=bracket["index"],
            exit_index=exit_index,
        )
        self.trades.append(trade)
        self.strategy.on_trade_closed(
            ClosedTrade(
                side=trade.side,
                entry_price=trade.entry_price,
                exit_price=trade.exit_price,
                amount=trade.amount,
                pnl=trade.pnl,
                fees=trade.fees,
                entry_time_ms=trade.entry_time_ms,
                exit_time_ms=trade.exit_time_ms,
                reason=trade.reason,
            )
        )
        return trade


def _average(spec: InstrumentSpec, fills: list) -> Decimal:
    prices = {f.price for f in fills}
    if len(prices) <= 1:
        return prices.pop() if prices else ZERO
    amount = sum((f.amount for f in fills), ZERO)
    if spec.is_inverse:
        average = amount / sum((f.amount / f.price for f in fills), ZERO)
    else:
        average = sum((f.amount * f.price for f in fills), ZERO) / amount
    return average.quantize(Decimal("1e-8")).normalize()


def _resolution_ms(candles: Candles) -> int:
    if len(candles) < 2:
        return 60_000
    return int(np.median(np.diff(candles.open_time_ms)))


def run_backtest(
    strategy: BaseStrategy,
    candles: Candles,
    config: BacktestConfig | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Replay ``candles`` through ``strategy``, sizing and the simulator engine."""
    config = config or BacktestConfig()
    if len(candles) == 0:
        raise BacktestError("no candles")
    started = time.perf_counter()
    run = _Run(strategy, candles, config)
    run.progress = progress
    n = len(candles)
    decisions = strategy.precompute(candles) if config.fast else None
    candidates = None if decisions is None else np.flatnonzero(decisions)
    index, stepped = 0, 0
    while index < n:
        signal_at, signal = run.next_signal(index, stepped, candidates)
        stepped = signal_at + 1
        if signal is None:
            break
        bracket = run.enter(signal_at, signal)
        if bracket is None:
            index = signal_at + 1
            continue
        exit_index = run.ride(bracket)
        run.record(bracket, exit_index)
        # the position closed during candle exit_index: its close is the next decision
        index, stepped = exit_index, exit_index + 1
        if progress is not None:
            progress(stepped, n)
    if progress is not None:
        progress(n, n)
    seconds = time.perf_counter() - started
    times, curve, exposed = equity_curve(run, config.equity)
    return BacktestResult(
        strategy=strategy.id,
        params=dict(strategy.params),
        instrument=config.instrument,
        currency=run.currency,
        candles=n,
        seconds=seconds,
        start_equity=config.equity,
        end_equity=run.engine.account(run.currency).balance,
        trades=run.trades,
        refused=run.refused,
        equity_times_ms=times,
        equity_curve=curve,
        exposure_candles=exposed,
    )


def equity_curve(run: _Run, start: Decimal) -> tuple[np.ndarray, np.ndarray, int]:
    """Mark-to-market equity at each candle's close (float, for the chart and drawdown)."""
    c = run.candles
    n = len(c)
    realized = np.zeros(n)
    floating = np.zeros(n)
    exposed = 0
    for trade in run.trades:
        first, last = trade.entry_index, trade.exit_index
        exposed += last - first
        realized[last] += float(trade.net)
        amount, entry = float(trade.amount), float(trade.entry_price)
        closes = c.close[first:last]
        if run.spec.is_inverse:
            gain = amount / entry - amount / closes
        else:
            gain = amount * (closes - entry)
        floating[first:last] = gain if trade.side is Side.BUY else -gain
    curve = float(start) + np.cumsum(realized) + floating
    return c.open_time_ms + run.duration_ms, curve, exposed
