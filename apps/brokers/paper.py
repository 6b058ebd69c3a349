"""Paper trading: the exchange simulator's engine in process, behind the Broker protocol.

What the app trades on when no broker account is connected. ``PaperBroker`` owns an
``ExchangeEngine`` (default balances 1 BTC, 10 ETH, 100,000 USDC) and a ``CandleFeed`` that replays
the sample candles the project ships (``simulator/sample_data``) on BTC-PERPETUAL and
BTC_USDC-PERPETUAL (and the ETH perpetuals at 0.07 × the BTC price), at ``speed`` (default 60×:
a one-minute candle per second), looping when the file ends. The first ``warmup`` candles are
replayed at once on connect, so a strategy has history at the start.

Brackets are ONE OTOCO request with ``trigger_fill_condition: incremental`` (entry; reduce-only
stop_market and take_limit legs), exactly as on Deribit. Errors are the typed errors of
``apps.brokers.base`` with Deribit's codes (``OrderRejected`` 10009 for no funds, ...).

Tests drive it by hand: ``PaperBroker(speed="max")`` replays as fast as possible, and
``PaperBroker(manual=True)`` has no feed task at all: ``await broker.step(n)`` replays ``n``
candles. ``broker.engine`` is the engine itself, for inspection (open orders, positions, fills).

On restart nothing is kept: a new PaperBroker is a fresh engine with the starting balances and
the replay starts again from the first candle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from apps.brokers.base import (
    AccountSummary,
    BracketRequest,
    BracketResult,
    BrokerEvent,
    Candle,
    ConnectionState,
    EventKind,
    Fill,
    InstrumentSpec,
    NotFound,
    Order,
    OrderRequest,
    Position,
    Ticker,
)
from apps.brokers.deribit.errors import ALREADY_CLOSED_CODES, error_class
from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.errors import ExchangeError
from apps.brokers.simulator.feed import SAMPLE_CANDLES, CandleFeed, ClosedCandle, load_candles
from apps.brokers.simulator.instruments import ETH_PER_BTC_PRICE
from apps.brokers.simulator.records import Changes

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_INSTRUMENTS: dict[str, float] = {
    "BTC-PERPETUAL": 1.0,
    "BTC_USDC-PERPETUAL": 1.0,
    "ETH-PERPETUAL": ETH_PER_BTC_PRICE,
    "ETH_USDC-PERPETUAL": ETH_PER_BTC_PRICE,
}
MINUTE_MS = 60_000
_END = object()


def _translate(exc: ExchangeError) -> Exception:
    cls = error_class(exc.code, exc.data)
    return cls(exc.message, code=exc.code, data=exc.data)


def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the engine; its ExchangeError becomes the matching base error (same code/data)."""
    try:
        return function(*args, **kwargs)
    except ExchangeError as exc:
        raise _translate(exc) from exc


class _Stream:
    """An async iterator over a queue that starts collecting when created; _END stops it."""

    def __init__(self, queues: set[asyncio.Queue[Any]]) -> None:
        self._queues = queues
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        queues.add(self.queue)

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        item = await self.queue.get()
        if item is _END:
            self._queues.discard(self.queue)
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._queues.discard(self.queue)


class PaperBroker:
    """The Broker protocol over an in-process simulated Deribit account."""

    broker_id = "paper"
    supports_linked_orders = True

    def __init__(
        self,
        *,
        candles: Sequence[Candle] | None = None,
        data_path: str | Path | None = None,
        instruments: Mapping[str, float] | None = None,
        balances: Mapping[str, Decimal | int | str] | None = None,
        speed: float | int | str = 60,
        loop: bool = True,
        manual: bool = False,
        warmup: int = 200,
        rebase_time: bool = True,
        history: int = 5000,
        engine: ExchangeEngine | None = None,
    ) -> None:
        if candles is None:
            candles = load_candles(data_path or SAMPLE_CANDLES)
        self.sample = list(candles)
        self.instrument_scales = dict(instruments or DEFAULT_INSTRUMENTS)
        self.engine = engine or ExchangeEngine(balances=balances, now_ms=0)
        offset = 0
        if rebase_time:
            # the replay's first live candle opens at the current minute
            now_minute = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
            first_live = self.sample[min(warmup, len(self.sample) - 1)]
            offset = now_minute - first_live.open_time_ms
        self.feed = CandleFeed(
            self.engine,
            self.sample,
            self.instrument_scales,
            speed=speed,
            loop=loop,
            time_offset_ms=offset,
        )
        first = self.sample[0]
        for name, scale in self.instrument_scales.items():
            self.engine.set_price(name, first.open * scale, first.open_time_ms + offset)
        self.manual = manual
        # CANDLE events carry a bare Candle, so they are sent for one instrument only
        self.main_instrument = next(iter(self.instrument_scales))
        self.warmup = warmup
        self._history: dict[str, deque[Candle]] = {
            name: deque(maxlen=history) for name in self.instrument_scales
        }
        self._state = ConnectionState.DISCONNECTED
        self._task: asyncio.Task[None] | None = None
        self._event_queues: set[asyncio.Queue[Any]] = set()
        self._candle_queues: set[asyncio.Queue[Any]] = set()
        self._warmed_up = False
        self.feed.on_close.append(self._on_close)
        self.engine.subscribe(self._on_changes)

    # --- connection -------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    async def connect(self) -> None:
        """Replay the warm-up candles, then (unless manual) start the paced feed task."""
        if self._state is ConnectionState.CONNECTED:
            return
        if not self._warmed_up:
            self._warmed_up = True
            self.feed.step(min(self.warmup, max(0, len(self.sample) - 1)))
        self._state = ConnectionState.CONNECTED
        if not self.manual:
            self._task = asyncio.create_task(self._run_feed(), name="paper-feed")

    async def disconnect(self) -> None:
        """Stop the feed task; open iterators of events and candles end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._state = ConnectionState.DISCONNECTED
        for queue in (*self._event_queues, *self._candle_queues):
            queue.put_nowait(_END)
        self._event_queues.clear()
        self._candle_queues.clear()

    async def _run_feed(self) -> None:
        try:
            async for _ in self.feed:
                pass  # _on_close hears every candle
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("paper feed failed")
            self._state = ConnectionState.ERROR
            self._publish(
                BrokerEvent(EventKind.DISCONNECTED, "paper feed failed", self.engine.now_ms)
            )
            return
        # the sample ran out (loop=False): candle streams end
        for queue in self._candle_queues:
            queue.put_nowait(_END)

    async def step(self, n: int = 1) -> list[ClosedCandle]:
        """Replay the next ``n`` candles now (for tests; use with ``manual=True``)."""
        closed = self.feed.step(n)
        await asyncio.sleep(0)
        return closed

    # --- events -----------------------------------------------------------------------------

    def _publish(self, event: BrokerEvent) -> None:
        for queue in self._event_queues:
            queue.put_nowait(event)

    def _on_changes(self, changes: Changes) -> None:
        if not self._event_queues:
            return
        now = changes.timestamp
        for order in changes.orders:
            self._publish(BrokerEvent(EventKind.ORDER, order.to_order(), now))
        for trade in changes.trades:
            self._publish(BrokerEvent(EventKind.FILL, trade.to_fill(), now))
        for position in changes.positions:
            self._publish(BrokerEvent(EventKind.POSITION, position.to_position(), now))

    def _on_close(self, closed: ClosedCandle) -> None:
        history = self._history.get(closed.instrument)
        if history is not None:
            history.append(closed.candle)
        for queue in self._candle_queues:
            queue.put_nowait(closed)
        if self._event_queues and closed.instrument == self.main_instrument:
            self._publish(
                BrokerEvent(EventKind.CANDLE, closed.candle, closed.candle.open_time_ms + MINUTE_MS)
            )

    def events(self) -> AsyncIterator[BrokerEvent]:
        """ORDER, FILL, POSITION and CANDLE events (the closed 1-minute candles of
        ``main_instrument``, the first instrument: BTC-PERPETUAL by default).

        Each call is an independent stream collecting from the moment of the call; it ends on
        ``disconnect``.
        """
        return _Stream(self._event_queues)

    async def closed_candles(
        self, instrument: str, resolution_minutes: int
    ) -> AsyncIterator[Candle]:
        """Each closed candle of ``instrument`` (1-minute candles merged to the resolution)."""
        self._check_instrument(instrument)
        if resolution_minutes < 1:
            raise ValueError("resolution_minutes must be at least 1")
        stream = _Stream(self._candle_queues)
        bucket: list[Candle] = []
        resolution_ms = resolution_minutes * MINUTE_MS
        try:
            async for closed in stream:
                if closed.instrument != instrument:
                    continue
                candle = closed.candle
                if resolution_minutes == 1:
                    yield candle
                    continue
                if bucket and _bucket(bucket[0], resolution_ms) != _bucket(candle, resolution_ms):
                    bucket = []  # a gap: drop the incomplete bucket
                bucket.append(candle)
                if (candle.open_time_ms + MINUTE_MS) % resolution_ms == 0:
                    yield _merge(bucket, resolution_ms)
                    bucket = []
        finally:
            await stream.aclose()

    # --- account and market data ------------------------------------------------------------

    def _check_instrument(self, instrument: str) -> InstrumentSpec:
        return _call(self.engine.spec, instrument)

    async def account_summary(self, currency: str) -> AccountSummary:
        return _call(self.engine.account, currency).to_summary()

    async def instruments(self) -> list[InstrumentSpec]:
        return [spec for spec in self.engine.instruments() if spec.name in self.instrument_scales]

    async def instrument(self, name: str) -> InstrumentSpec:
        if name not in self.instrument_scales:
            raise NotFound(f"unknown instrument {name}", code=13020)
        return self._check_instrument(name)

    async def ticker(self, instrument: str) -> Ticker:
        return _call(self.engine.ticker, instrument).to_ticker()

    async def candles(
        self, instrument: str, resolution_minutes: int, start_ms: int, end_ms: int
    ) -> list[Candle]:
        """Closed candles replayed so far with ``start_ms <= open time <= end_ms``."""
        self._check_instrument(instrument)
        history = list(self._history.get(instrument, ()))
        if resolution_minutes > 1:
            resolution_ms = resolution_minutes * MINUTE_MS
            groups: dict[int, list[Candle]] = {}
            for candle in history:
                groups.setdefault(_bucket(candle, resolution_ms), []).append(candle)
            history = [
                _merge(group, resolution_ms)
                for group in groups.values()
                if len(group) == resolution_minutes
            ]
        return [c for c in history if start_ms <= c.open_time_ms <= end_ms]

    # --- orders -----------------------------------------------------------------------------

    async def place_bracket(self, request: BracketRequest) -> BracketResult:
        """Entry, reduce-only stop and take-profit as ONE OTOCO (incremental), like Deribit."""
        entry_label, stop_label, take_label = request.labels
        exit_side = request.side.opposite.value
        params: dict[str, Any] = {
            "type": request.entry_type,
            "label": entry_label,
            "linked_order_type": "one_triggers_one_cancels_other",
            "trigger_fill_condition": "incremental",
            "otoco_config": [
                {
                    "direction": exit_side,
                    "amount": request.amount,
                    "type": "stop_market",
                    "trigger_price": request.stop_price,
                    "trigger": request.trigger,
                    "reduce_only": True,
                    "label": stop_label,
                },
                {
                    "direction": exit_side,
                    "amount": request.amount,
                    "type": "take_limit",
                    "price": request.take_profit_price,
                    "trigger_price": request.take_profit_price,
                    "trigger": request.trigger,
                    "reduce_only": True,
                    "label": take_label,
                },
            ],
        }
        if request.entry_type == "limit":
            if request.entry_price is None:
                raise ValueError("a limit entry needs entry_price")
            params["price"] = request.entry_price
        result = _call(
            self.engine.place_order,
            request.instrument,
            request.side.value,
            request.amount,
            **params,
        )
        stop_id, take_id = result.order.oto_order_ids
        entry = self.engine.get_order(result.order.order_id)  # after any immediate trigger
        return BracketResult(
            entry=entry.to_order(),
            stop_loss=self.engine.get_order(stop_id).to_order(),
            take_profit=self.engine.get_order(take_id).to_order(),
        )

    async def place_order(self, request: OrderRequest) -> Order:
        trigger = request.trigger
        if request.order_type not in ("market", "limit") and trigger is None:
            trigger = "mark_price"
        result = _call(
            self.engine.place_order,
            request.instrument,
            request.side.value,
            request.amount,
            type=request.order_type,
            price=request.price,
            trigger_price=request.trigger_price,
            trigger=trigger,
            label=request.label,
            reduce_only=request.reduce_only,
        )
        return result.order.to_order()

    async def cancel(self, order_id: str) -> Order:
        """Cancel; an order already filled or cancelled is returned as it is, not raised."""
        try:
            return self.engine.cancel(order_id).to_order()
        except ExchangeError as exc:
            if exc.code in ALREADY_CLOSED_CODES:
                return self.engine.get_order(order_id).to_order()
            raise _translate(exc) from exc

    async def open_orders(
        self, instrument: str | None = None, label_prefix: str | None = None
    ) -> list[Order]:
        orders = _call(self.engine.open_orders, instrument)
        return [
            o.to_order() for o in orders if label_prefix is None or o.label.startswith(label_prefix)
        ]

    async def order_state(self, order_id: str) -> Order:
        return _call(self.engine.get_order, order_id).to_order()

    async def orders_by_label(self, label: str, currency: str) -> list[Order]:
        return [o.to_order() for o in self.engine.orders_by_label(label, currency)]

    async def positions(self, currency: str | None = None) -> list[Position]:
        return [p.to_position() for p in self.engine.positions(currency)]

    async def close_position(self, instrument: str) -> Order | None:
        """Close the whole position at market (reduce-only); None when there is none."""
        if not _call(self.engine.position, instrument).size:
            return None
        return _call(self.engine.close_position, instrument).order.to_order()

    async def fills(self, instrument: str, since_ms: int = 0) -> list[Fill]:
        return [t.to_fill() for t in self.engine.trades(instrument, start_ms=since_ms)]


def _bucket(candle: Candle, resolution_ms: int) -> int:
    return candle.open_time_ms // resolution_ms * resolution_ms


def _merge(candles: list[Candle], resolution_ms: int) -> Candle:
    return Candle(
        _bucket(candles[0], resolution_ms),
        candles[0].open,
        max(c.high for c in candles),
        min(c.low for c in candles),
        candles[-1].close,
        sum(c.volume for c in candles),
    )
