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

Persistence (``persist=True``, what the app's paper account uses): the exchange's state lives in
the database row ``apps.brokers.models.PaperExchangeState`` as a snapshot
(``simulator/snapshot.py``: balances, positions, open orders with their linked legs, recent order
and fill history, id counters, the replay's cursor and time offset). ``connect`` claims the row
and restores it into the fresh engine, so a restart (a stopped run, a deploy, a kill -9)
continues with the same account, the same open orders and the next candle; the reconcile then
finds what it left. A snapshot that cannot be restored (corrupt, another format) is logged with
its context and the account starts fresh; ``manage.py paper_reset`` clears it on purpose.

When it writes: every request that can change orders (place, cancel, close) writes before it
answers; a change made by the price (a fill, a trigger) is written at once by a background task,
and its ORDER/FILL/POSITION events are published only after the write, so nothing the runner can
see is lost by a crash; every other request first writes what moved since the last write (so no
answer runs ahead of the stored state, and the clock never goes back after a restore); the
paced feed writes its cursor every ``CHECKPOINT_SECONDS``; ``disconnect`` writes last. A write
is skipped when nothing changed, is one UPDATE of one row, and runs on a thread of its own (the
ORM is synchronous; the engine lives on the event loop). Writes are fenced: a session whose row
was claimed by a newer one stops (ConnectionLost) instead of overwriting it. Without
``persist`` (tests, backtests) nothing is kept: a new PaperBroker starts from the starting
balances and the first candle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from apps.brokers.base import (
    AccountSummary,
    BracketRequest,
    BracketResult,
    BrokerEvent,
    Candle,
    ConnectionLost,
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
from apps.brokers.simulator.feed import (
    SAMPLE_CANDLES,
    CandleFeed,
    ClosedCandle,
    load_candles,
    scaled,
)
from apps.brokers.simulator.instruments import ETH_PER_BTC_PRICE
from apps.brokers.simulator.records import Changes
from apps.brokers.simulator.snapshot import (
    FORMAT_VERSION,
    SnapshotError,
    engine_restore,
    engine_snapshot,
    snapshot_summary,
)

if TYPE_CHECKING:
    from apps.brokers.models import PaperExchangeState

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_INSTRUMENTS: dict[str, float] = {
    "BTC-PERPETUAL": 1.0,
    "BTC_USDC-PERPETUAL": 1.0,
    "ETH-PERPETUAL": ETH_PER_BTC_PRICE,
    "ETH_USDC-PERPETUAL": ETH_PER_BTC_PRICE,
}
MINUTE_MS = 60_000
CHECKPOINT_SECONDS = 5.0  # the paced feed stores its cursor at least this often (wall clock)
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


class PaperStateStore:
    """The database row of a persistent PaperBroker, read and written on a thread of its own.

    Why a thread: the engine runs on the broker's asyncio loop and the Django ORM is synchronous
    (it raises SynchronousOnlyOperation in async code). One worker thread keeps the writes in the
    order they were made and holds one database connection, closed by ``close``.
    """

    def __init__(self) -> None:
        self.owner = uuid.uuid4().hex
        self._executor: ThreadPoolExecutor | None = None

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paper-state")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, _with_connection, function, *args
        )

    async def claim(self) -> PaperExchangeState:
        """Become the session that holds the paper account; the row as it was stored."""
        from apps.brokers.models import PaperExchangeState

        return await self._in_thread(PaperExchangeState.claim, self.owner)

    async def save(self, data: dict[str, Any]) -> bool:
        """One UPDATE; False when another session claimed the account since."""
        from apps.brokers.models import PaperExchangeState

        return await self._in_thread(PaperExchangeState.store, self.owner, data, FORMAT_VERSION)

    async def close(self) -> None:
        """Close the thread's database connection and end the thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, _close_connection)
        finally:
            executor.shutdown(wait=False)


def _close_connection() -> None:
    """Close the calling thread's database connection (Django's are per thread)."""
    from django.db import connection

    connection.close()


def _with_connection(function: Callable[..., T], *args: Any) -> T:
    """Run an ORM call on the writer thread, first dropping a connection that broke or aged out
    (what Django does around each request), so a database restart costs one failed write."""
    from django.db import close_old_connections

    close_old_connections()
    return function(*args)


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
        persist: bool = False,
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
        self._rebase_time = rebase_time
        self._history_size = history
        # persistence (see the module docstring); None: nothing is kept
        self._store = PaperStateStore() if persist else None
        self._claimed = False
        self._lost = False  # another session claimed the account: no more writes
        self._saved_mark: tuple[int, int, int] | None = None
        self._saved_at = 0.0  # time.monotonic() of the last write
        self._save_lock = asyncio.Lock()
        self._save_task: asyncio.Task[None] | None = None
        self._held: list[BrokerEvent] = []  # events waiting for the write that covers them
        self.feed.on_close.append(self._on_close)
        self.engine.subscribe(self._on_changes)

    # --- connection -------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    async def connect(self) -> None:
        """Restore the stored account (``persist``) or replay the warm-up candles, then (unless
        manual) start the paced feed task."""
        if self._state is ConnectionState.CONNECTED:
            return
        if self._store is not None and not self._claimed:
            row = await self._store.claim()
            self._claimed = True
            if row.data:
                self._restore(row)
        if not self._warmed_up:
            self._warmed_up = True
            self.feed.step(min(self.warmup, max(0, len(self.sample) - 1)))
        await self._save()
        self._state = ConnectionState.CONNECTED
        if not self.manual:
            self._task = asyncio.create_task(self._run_feed(), name="paper-feed")

    async def disconnect(self) -> None:
        """Stop the feed task and store the state a last time; open iterators of events and
        candles end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._store is not None and self._claimed:
            try:
                await self._save()
            except Exception:
                logger.exception(
                    "paper state not stored at disconnect (engine version %s, replay %s)",
                    self.engine.version,
                    self.feed.stepped,
                )
            saving, self._save_task = self._save_task, None
            if saving is not None and not saving.done():
                saving.cancel()
            await self._store.close()
        self._state = ConnectionState.DISCONNECTED
        for queue in (*self._event_queues, *self._candle_queues):
            queue.put_nowait(_END)
        self._event_queues.clear()
        self._candle_queues.clear()

    async def _run_feed(self) -> None:
        try:
            async for _ in self.feed:  # _on_close hears every candle
                if self._store is not None and time.monotonic() - self._saved_at >= (
                    CHECKPOINT_SECONDS
                ):
                    await self._save()  # the cursor, so a crash rewinds the replay little
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("paper feed failed")
            if self._state is not ConnectionState.ERROR:
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
        await self._save()
        await asyncio.sleep(0)
        return closed

    # --- persistence ------------------------------------------------------------------------

    def _restore(self, row: PaperExchangeState) -> None:
        """Put the stored account into the fresh engine; a bad snapshot is logged, not raised."""
        try:
            if row.format_version != FORMAT_VERSION:
                raise SnapshotError(
                    f"stored format {row.format_version}, this code reads {FORMAT_VERSION}"
                )
            engine_restore(row.data, self.engine, self.feed)
        except SnapshotError as exc:
            logger.error(
                "paper state not restored, the paper account starts fresh: %s "
                "(row written %s after %s writes; holds %s)",
                exc,
                row.updated_at,
                row.writes,
                snapshot_summary(row.data),
            )
            return
        self._warmed_up = True  # the history is rebuilt from the replay, not replayed again
        if self._rebase_time:
            self._rebase_clock()
        for candle in self.feed.recent(self._history_size):
            for name, scale in self.instrument_scales.items():
                self._history[name].append(scaled(candle, scale))
        logger.info("paper state restored: %s", snapshot_summary(row.data))

    def _rebase_clock(self) -> None:
        """The replay goes on with its next candle, at the current minute if that is later (as a
        fresh PaperBroker starts at the current minute): the clock only ever moves forward."""
        next_open = self.feed.next_open_ms()
        now_minute = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
        if next_open is not None and next_open < now_minute:
            self.feed.time_offset_ms += now_minute - next_open

    def _mark(self) -> tuple[int, int, int]:
        """What moves when there is something new to store (the engine's account, the replay)."""
        return (self.engine.version, self.feed.stepped, self.feed.time_offset_ms)

    async def _save(self) -> None:
        """Store the state if it moved since the last write, then publish the events it covers.

        Returns once everything that happened before the call is stored (a write in flight is
        waited for, never duplicated). Raises ConnectionLost when another session holds the
        account now.
        """
        if self._store is None:
            return
        async with self._save_lock:
            if self._lost:
                raise ConnectionLost("the paper account is held by another session now")
            mark = self._mark()
            if mark == self._saved_mark:
                return
            data = engine_snapshot(self.engine, self.feed)
            held, self._held = self._held, []
            try:
                stored = await self._store.save(data)
            except BaseException:
                self._held[:0] = held  # published after the write that succeeds
                raise
            if not stored:
                self._lose_account()
                raise ConnectionLost("the paper account was claimed by another session")
            self._saved_mark = mark
            self._saved_at = time.monotonic()
        for event in held:
            self._publish(event)

    def _lose_account(self) -> None:
        """Another session claimed the row (or it was reset): this one must not write again."""
        self._lost = True
        self._held.clear()
        logger.error(
            "paper state: another session claimed the paper account; this one stops "
            "(engine version %s not stored)",
            self.engine.version,
        )
        self._state = ConnectionState.ERROR
        self._publish(
            BrokerEvent(
                EventKind.DISCONNECTED,
                "paper account claimed by another session",
                self.engine.now_ms,
            )
        )

    def _schedule_save(self) -> None:
        """A change made by the price: store it at once, in a task of the broker's loop."""
        if self._lost or (self._save_task is not None and not self._save_task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # stepped outside the loop: the next request or step stores it
        self._save_task = loop.create_task(self._save_in_background(), name="paper-state-save")

    async def _save_in_background(self) -> None:
        try:
            while self._mark() != self._saved_mark and not self._lost:
                await self._save()
        except asyncio.CancelledError:
            raise
        except ConnectionLost:
            return  # _lose_account said it
        except Exception:
            logger.exception(
                "paper state write failed (engine version %s); the next request retries it",
                self.engine.version,
            )

    # --- events -----------------------------------------------------------------------------

    def _publish(self, event: BrokerEvent) -> None:
        for queue in self._event_queues:
            queue.put_nowait(event)

    def _on_changes(self, changes: Changes) -> None:
        if self._store is not None:
            self._schedule_save()
        if not self._event_queues:
            return
        now = changes.timestamp
        events = [
            *(BrokerEvent(EventKind.ORDER, order.to_order(), now) for order in changes.orders),
            *(BrokerEvent(EventKind.FILL, trade.to_fill(), now) for trade in changes.trades),
            *(
                BrokerEvent(EventKind.POSITION, position.to_position(), now)
                for position in changes.positions
            ),
        ]
        if self._store is not None:
            self._held.extend(events)  # published once stored (_save)
            return
        for event in events:
            self._publish(event)

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

    def pushes_account_changes(self, currency: str) -> bool:
        """Every order, fill and position change of the engine is published to ``events()``
        listeners (after it is saved, when persisting)."""
        return True

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
        await self._save()
        return _call(self.engine.account, currency).to_summary()

    async def instruments(self) -> list[InstrumentSpec]:
        return [spec for spec in self.engine.instruments() if spec.name in self.instrument_scales]

    async def instrument(self, name: str) -> InstrumentSpec:
        if name not in self.instrument_scales:
            raise NotFound(f"unknown instrument {name}", code=13020)
        return self._check_instrument(name)

    async def ticker(self, instrument: str) -> Ticker:
        await self._save()
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
        await self._save()
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
        await self._save()
        return result.order.to_order()

    async def cancel(self, order_id: str) -> Order:
        """Cancel; an order already filled or cancelled is returned as it is, not raised."""
        try:
            order = self.engine.cancel(order_id).to_order()
        except ExchangeError as exc:
            if exc.code in ALREADY_CLOSED_CODES:
                await self._save()
                return self.engine.get_order(order_id).to_order()
            raise _translate(exc) from exc
        await self._save()
        return order

    async def open_orders(
        self, instrument: str | None = None, label_prefix: str | None = None
    ) -> list[Order]:
        await self._save()
        orders = _call(self.engine.open_orders, instrument)
        return [
            o.to_order() for o in orders if label_prefix is None or o.label.startswith(label_prefix)
        ]

    async def order_state(self, order_id: str) -> Order:
        await self._save()
        return _call(self.engine.get_order, order_id).to_order()

    async def orders_by_label(self, label: str, currency: str) -> list[Order]:
        await self._save()
        return [o.to_order() for o in self.engine.orders_by_label(label, currency)]

    async def positions(self, currency: str | None = None) -> list[Position]:
        await self._save()
        return [p.to_position() for p in self.engine.positions(currency)]

    async def close_position(self, instrument: str) -> Order | None:
        """Close the whole position at market (reduce-only); None when there is none."""
        await self._save()
        if not _call(self.engine.position, instrument).size:
            return None
        order = _call(self.engine.close_position, instrument).order.to_order()
        await self._save()
        return order

    async def fills(self, instrument: str, since_ms: int = 0) -> list[Fill]:
        await self._save()
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
