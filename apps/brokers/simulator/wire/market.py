"""The market behind the wire: the engine, the candle replay, and the notifications they cause.

Time: without a data file the simulator's clock is the wall clock and prices move only when a
test or ``/_sim/price`` moves them. With ``data_path`` (or ``candles``) the candles are rebased
so that the first ``history_candles`` of the file lie in the past (chart history) and the replay
starts at the current minute; the clock then runs ``speed`` times faster than the wall clock
(60: one minute candle a second; 0: as fast as possible, the clock moving candle by candle; None:
no replay, the clock runs in real time).

One BTC candle file drives all four perpetuals: the BTC books take its prices, the ETH books
those prices times ``instruments.ETH_PER_BTC_PRICE``, each rounded to the instrument's tick.
Each candle is walked open → nearer extreme → farther extreme → close (the engine's
``intra_candle_path``); the open is a gap from the previous close, the other legs continuous.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from apps.brokers.base import Candle
from apps.brokers.simulator.engine import ExchangeEngine, intra_candle_path
from apps.brokers.simulator.feed import load_candles
from apps.brokers.simulator.instruments import (
    DEFAULT_BALANCES,
    ETH_PER_BTC_PRICE,
    default_specs,
)
from apps.brokers.simulator.records import Changes
from apps.brokers.simulator.wire.channels import Channel, resolution_minutes
from apps.brokers.simulator.wire.chart import MINUTE_MS, ChartBook
from apps.brokers.simulator.wire.shapes import account_to_deribit, ticker_to_deribit

log = logging.getLogger(__name__)

DEFAULT_PRICES: dict[str, Decimal] = {
    "BTC-PERPETUAL": Decimal("25000"),
    "BTC_USDC-PERPETUAL": Decimal("25000"),
    "ETH-PERPETUAL": Decimal("1750"),
    "ETH_USDC-PERPETUAL": Decimal("1750"),
}


@dataclass
class SimOptions:
    """Everything the simulator can be started with (the command's flags, the test helper's
    keyword arguments)."""

    client_id: str = "paper"
    client_secret: str = "paper"
    testnet: bool = True
    token_ttl: float = 900.0  # seconds an access token lives
    min_heartbeat_interval: float = 10.0  # Deribit's minimum; tests lower it
    max_frame_bytes: int = 32 * 1024  # Deribit's frame / body limit
    balances: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    prices: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    data_path: str | None = None  # CSV of 1-minute candles (open_time,open,high,low,close,volume)
    candles: list[Candle] | None = None  # the same, given directly (tests)
    speed: float | None = 60.0  # None: no replay; 0: as fast as possible
    history_candles: int = 500  # candles of the data already in the past at start
    loop: bool = False  # start the data again when it ends (times keep increasing)
    slippage_ticks: int = 0
    # Deribit's default account limits (see wire/limits.py); None: unlimited
    rate_limits: tuple[tuple[float, float], tuple[float, float]] | None = None
    engine_factory: Callable[[SimOptions], ExchangeEngine] | None = None


POINT_OFFSETS_MS = (0, 20_000, 40_000, MINUTE_MS - 1)  # where in its minute each point lies
POINT_FRACTIONS = (0.0, 1 / 3, 2 / 3, 0.999)  # when in the candle's wall time it is walked

Publish = Callable[[Callable[[Channel], list[Any]]], None]


class MarketHub:
    """Owns the engine; turns its changes and every price point into notifications."""

    def __init__(self, options: SimOptions, *, publish: Publish) -> None:
        self.options = options
        self.publish = publish
        self.chart = ChartBook()
        self.candles: list[Candle] = list(options.candles or ())
        if options.data_path and not self.candles:
            self.candles = load_candles(options.data_path)
        self._offset_ms = 0  # added to the data's times
        self._clock_anchor: tuple[float, int] | None = None  # (monotonic, sim ms)
        self._clock_limit: int | None = None  # while replaying: the next point's time
        self._replay_task: asyncio.Task[None] | None = None
        self.replayed = 0  # candles walked so far (history included), over all rounds
        self._rounds = 0  # completed passes over looping data
        self.engine = self._new_engine()
        self._load_history()

    # -- engine --------------------------------------------------------------------------------
    def _new_engine(self) -> ExchangeEngine:
        if self.options.engine_factory is not None:
            engine = self.options.engine_factory(self.options)
        else:
            engine = ExchangeEngine(
                default_specs(),
                self.options.balances,
                slippage_ticks=self.options.slippage_ticks,
                now_ms=self.now_ms(),
            )
        engine.subscribe(self._on_changes)
        return engine

    def reset(self) -> None:
        """A fresh account at the current prices (orders, positions, trades forgotten)."""
        prices = {name: self.engine.last_price(name) for name in self.engine.specs}
        self.engine = self._new_engine()
        for name, price in prices.items():
            if price > 0:
                self.engine.set_price(name, price)

    def sync_clock(self) -> None:
        """Set the engine's clock to the simulator's before it acts on a request."""
        self.engine.now_ms = max(self.engine.now_ms, self.now_ms())

    # -- time ----------------------------------------------------------------------------------
    def now_ms(self) -> int:
        anchor = self._clock_anchor
        if anchor is None:
            return int(time.time() * 1000)
        wall, sim = anchor
        # no replay: the clock runs in real time from the end of the history
        speed = 1.0 if self.options.speed is None else self.options.speed
        now = sim + int((time.monotonic() - wall) * speed * 1000)
        return min(now, self._clock_limit) if self._clock_limit is not None else now

    def instrument_names(self) -> frozenset[str]:
        return frozenset(self.engine.specs)

    # -- prices --------------------------------------------------------------------------------
    def price_for(self, instrument: str, btc_price: float) -> float:
        """The instrument's price when BTC trades at ``btc_price``, on the instrument's tick."""
        spec = self.engine.specs[instrument]
        value = Decimal(repr(btc_price))
        if spec.base_currency == "ETH":
            value *= Decimal(repr(ETH_PER_BTC_PRICE))
        ticks = (value / spec.tick_size).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        return float(ticks * spec.tick_size)

    def _load_history(self) -> None:
        if not self.candles:
            now = int(time.time() * 1000)
            for name, price in self.options.prices.items():
                if name in self.engine.specs:
                    self.engine.set_price(name, float(price))
                    self.chart.record(name, now, self.engine.ticker(name).last_price)
            return
        history = max(0, min(self.options.history_candles, len(self.candles)))
        now = int(time.time() * 1000)
        start_of_replay = now - now % MINUTE_MS
        pivot = (
            self.candles[history].open_time_ms
            if history < len(self.candles)
            else (self.candles[-1].open_time_ms + MINUTE_MS)
        )
        self._offset_ms = start_of_replay - pivot
        for candle in self.candles[:history]:
            for name in self.engine.specs:
                self.chart.add_candle(name, self._scaled(name, candle))
        last = self.candles[history - 1] if history else self.candles[0]
        for name in self.engine.specs:
            self.engine.set_price(name, self.price_for(name, last.close if history else last.open))
        self._clock_anchor = (time.monotonic(), start_of_replay)
        self.replayed = history

    def _scaled(self, instrument: str, candle: Candle) -> Candle:
        return Candle(
            open_time_ms=candle.open_time_ms + self._offset_ms,
            open=self.price_for(instrument, candle.open),
            high=self.price_for(instrument, candle.high),
            low=self.price_for(instrument, candle.low),
            close=self.price_for(instrument, candle.close),
            volume=candle.volume,
        )

    def set_price(self, instrument: str, price: Decimal, *, gap: bool = False) -> None:
        """Move one instrument's price now (continuously, or as a gap); orders on the way fill."""
        self.sync_clock()
        if instrument not in self.engine.specs:
            raise KeyError(f"unknown instrument {instrument}")
        if gap:
            self.engine.set_price(instrument, float(price))
        else:
            self.engine.move_price(instrument, float(price))
        self._price_point(instrument, self.engine.now_ms, Decimal(0))

    def _price_point(self, instrument: str, timestamp_ms: int, volume: Decimal) -> None:
        ticker = self.engine.ticker(instrument)
        self.chart.record(instrument, timestamp_ms, ticker.last_price, volume)
        self._publish_market(instrument)

    # -- the replay ----------------------------------------------------------------------------
    async def start(self) -> None:
        more = self.replayed < len(self.candles) or self.options.loop
        if self.candles and self.options.speed is not None and more:
            self._replay_task = asyncio.create_task(self._replay())

    async def stop(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None

    def _next_candle(self) -> Candle | None:
        """The next data candle to walk (the data starts again when ``loop`` is set)."""
        if not self.candles:
            return None
        index = self.replayed - self._rounds * len(self.candles)
        if index >= len(self.candles):
            if not self.options.loop:
                return None
            self._rounds += 1
            index = 0
            span = self.candles[-1].open_time_ms - self.candles[0].open_time_ms + MINUTE_MS
            self._offset_ms += span
        return self.candles[index]

    def step(self, n: int = 1) -> int:
        """Walk the next ``n`` data candles at once (tests that decide when candles close);
        returns how many were walked (fewer at the end of data that does not loop)."""
        walked = 0
        for _ in range(n):
            candle = self._next_candle()
            if candle is None:
                break
            self.step_candle(candle)
            self.replayed += 1
            walked += 1
        return walked

    async def _replay(self) -> None:
        """Walk the candles at ``speed``: each candle's four points spread over its duration
        (open at its start, the extremes at 1/3 and 2/3, the close at its end)."""
        speed = self.options.speed or 0.0
        candle_seconds = 60.0 / speed if speed > 0 else 0.0
        begin = time.monotonic()
        paced = 0
        try:
            while (candle := self._next_candle()) is not None:
                candle_start = begin + paced * candle_seconds
                for point in range(4):
                    if candle_seconds:
                        wait = candle_start + POINT_FRACTIONS[point] * candle_seconds
                        await asyncio.sleep(max(0.0, wait - time.monotonic()))
                    self.step_point(candle, point)
                if not candle_seconds:
                    await asyncio.sleep(0)
                paced += 1
                self.replayed += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator replay stopped")

    def step_candle(self, candle: Candle) -> None:
        """Walk one data candle through every book at once (all four points)."""
        for point in range(4):
            self.step_point(candle, point)

    def step_point(self, candle: Candle, point: int) -> None:
        """Point ``point`` (0 open, 1 nearer extreme, 2 farther extreme, 3 close) of a data
        candle on every book: the open is a gap from the previous close, the rest continuous."""
        open_ms = candle.open_time_ms + self._offset_ms
        btc_price = intra_candle_path(candle.open, candle.high, candle.low, candle.close)[point]
        stamp = open_ms + POINT_OFFSETS_MS[point]
        # the clock runs on from this point but never past the next one
        self._clock_anchor = (time.monotonic(), stamp)
        self._clock_limit = open_ms + (*POINT_OFFSETS_MS, MINUTE_MS)[point + 1] - 1
        stamp = max(stamp, self.engine.now_ms)
        volume = Decimal(repr(candle.volume)) / 4
        for name in self.engine.specs:
            price = self.price_for(name, btc_price)
            if point == 0:
                self.engine.set_price(name, price, stamp)
            else:
                self.engine.move_price(name, price, stamp)
            self._price_point(name, stamp, volume)

    # -- notifications -------------------------------------------------------------------------
    def _publish_market(self, instrument: str) -> None:
        def payloads(channel: Channel) -> list[Any]:
            return self.current(channel) if channel.instrument == instrument else []

        self.publish(payloads)

    def _on_changes(self, changes: Changes) -> None:
        orders = [order.to_deribit() for order in changes.orders]
        trades = [trade.to_deribit() for trade in changes.trades]
        body = changes.to_deribit()
        portfolio: list[Any] = []

        def payloads(channel: Channel) -> list[Any]:
            if not channel.private or not channel.covers(changes.instrument_name, changes.currency):
                return []
            if channel.family == "user.changes":
                return [body]
            if channel.family == "user.orders":
                if not orders:
                    return []
                return list(orders) if channel.interval == "raw" else [orders]
            if channel.family == "user.trades":
                return [trades] if trades else []
            if channel.family == "user.portfolio":
                if not portfolio:
                    portfolio.append(account_to_deribit(self.engine.account(changes.currency)))
                return portfolio
            return []

        self.publish(payloads)

    def current(self, channel: Channel) -> list[Any]:
        """What a market channel shows now (sent right after subscribing, as Deribit does)."""
        instrument = channel.instrument
        if instrument is None or instrument not in self.engine.specs:
            return []
        if channel.family == "ticker":
            return [ticker_to_deribit(self.engine, instrument)]
        if channel.family == "chart.trades":
            bar = self.chart.forming(instrument, resolution_minutes(str(channel.interval)))
            return [bar.to_deribit()] if bar is not None else []
        return []

    # -- cancel on disconnect ------------------------------------------------------------------
    def cancel_on_disconnect(self, order_ids: Iterable[str]) -> int:
        cancelled = 0
        for order_id in order_ids:
            try:
                order = self.engine.get_order(order_id)
            except Exception:  # noqa: S112 - an unknown id has nothing to cancel
                continue
            if order.is_live:
                self.sync_clock()
                _cancel(self.engine, order_id, "cancel_on_disconnect")
                cancelled += 1
        return cancelled

    # -- inspection ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "time_ms": self.now_ms(),
            "replayed_candles": self.replayed,
            "total_candles": len(self.candles),
            "prices": {name: engine.ticker(name).last_price for name in sorted(engine.specs)},
            "orders": [order.to_deribit() for order in engine.all_orders()],
            "open_orders": [order.to_deribit() for order in engine.open_orders()],
            "positions": [position.to_deribit() for position in engine.positions()],
            "accounts": {
                currency: account_to_deribit(engine.account(currency))
                for currency in engine.currencies()
            },
            "trades": [trade.to_deribit() for trade in engine.trades()],
        }


def _cancel(engine: ExchangeEngine, order_id: str, reason: str) -> None:
    """Cancel with a reason when the engine takes one (``cancel_on_disconnect``)."""
    if "reason" in inspect.signature(engine.cancel).parameters:
        engine.cancel(order_id, reason=reason)  # type: ignore[call-arg]
    else:
        engine.cancel(order_id)
