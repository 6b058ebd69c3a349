"""DeribitBroker: the Broker protocol over one DeribitClient connection.

The bracket is ONE ``private/buy``/``private/sell`` with Deribit's own linked orders (OTOCO), so
the exchange holds entry, stop and target as a set. A placement whose answer is lost (timeout,
socket dropped) raises ``OrderOutcomeUnknown``; ``resolve_bracket`` then finds it by label.
It is never sent twice.

Take-profit leg: ``take_limit`` with trigger and limit price both at the target. Once the target
trades, a reduce-only limit at the target price goes to the book: it never fills worse than the
target (``take_market`` could slip on a spike, and the target is a profit, not the protection —
the stop is a ``stop_market`` because it must fill). Unlike a plain ``limit`` secondary it does
not rest in the book the moment the entry fills, so it cannot be hit by a wick that trades through
the price without the trigger source (mark price by default) agreeing. ``take_profit_type``
switches to ``take_market`` or ``limit`` if a trader prefers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from apps.brokers.base import (
    AccountSummary,
    BracketRequest,
    BracketResult,
    BrokerError,
    BrokerEvent,
    Candle,
    ConnectionLost,
    ConnectionState,
    EventKind,
    Fill,
    InstrumentSpec,
    NotFound,
    Order,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderRequest,
    Position,
    Ticker,
)
from apps.brokers.deribit import codec
from apps.brokers.deribit.client import MAINNET_URL, TESTNET_URL, DeribitClient
from apps.brokers.deribit.errors import ALREADY_CLOSED_CODES

logger = logging.getLogger("apps.brokers.deribit")

DEFAULT_CURRENCIES = ("BTC", "ETH", "USDC")
# Extra wait after valid_until before looking a lost placement up: clock skew between us and the
# matching engine, and the engine's own queue.
RESOLVE_GRACE_S = 0.25
_LOST = object()  # marker in a candle queue: the connection is gone and will not come back
_RESUMED = object()  # marker: the connection came back; candles may have closed meanwhile


def _now_ms() -> int:
    return int(time.time() * 1000)


class _EventStream:
    """An async iterator of BrokerEvents that starts collecting the moment it is created."""

    def __init__(self, broker: DeribitBroker) -> None:
        self._broker = broker
        self._queue: asyncio.Queue[BrokerEvent] = asyncio.Queue()
        broker._event_queues.add(self._queue)

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> BrokerEvent:
        if self._queue not in self._broker._event_queues and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    async def aclose(self) -> None:
        self._broker._event_queues.discard(self._queue)


class DeribitBroker:
    broker_id = "deribit"
    supports_linked_orders = True

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        url: str | None = None,
        testnet: bool = True,
        auto_reconnect: bool = False,
        request_timeout: float = 10.0,
        order_timeout: float | None = None,
        heartbeat_interval: float | None = 30,
        take_profit_type: str = "take_limit",
        currencies: tuple[str, ...] = DEFAULT_CURRENCIES,
        use_valid_until: bool = True,
        client: DeribitClient | None = None,
        **client_options: Any,
    ) -> None:
        if take_profit_type not in codec.TAKE_PROFIT_TYPES:
            raise ValueError(f"take_profit_type must be one of {codec.TAKE_PROFIT_TYPES}")
        self.testnet = testnet
        self.url = url or (TESTNET_URL if testnet else MAINNET_URL)
        self.client = client or DeribitClient(
            self.url,
            client_id,
            client_secret,
            request_timeout=request_timeout,
            heartbeat_interval=heartbeat_interval,
            auto_reconnect=auto_reconnect,
            **client_options,
        )
        self.order_timeout = order_timeout if order_timeout is not None else request_timeout
        self.take_profit_type = take_profit_type
        self.currencies = tuple(currencies)
        self.use_valid_until = use_valid_until
        self.event_channels = [f"user.changes.future.{c}.raw" for c in self.currencies]
        self._specs: dict[str, InstrumentSpec] = {}
        self._event_queues: set[asyncio.Queue[BrokerEvent]] = set()
        self._candle_queues: set[asyncio.Queue[Any]] = set()
        self._unknown_deadlines: dict[str, float] = {}  # bracket id -> monotonic deadline
        self._events_subscribed = False
        self._changes: collections.deque[tuple[dict[str, Any], int]] = collections.deque()
        self.client.add_listener(self._on_connection_event)

    def __repr__(self) -> str:
        return f"DeribitBroker(url={self.url!r}, state={self.state.value})"

    # --- connection ---------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self.client.state

    @property
    def auto_reconnect(self) -> bool:
        return self.client.auto_reconnect

    @auto_reconnect.setter
    def auto_reconnect(self, value: bool) -> None:
        self.client.auto_reconnect = value

    @property
    def last_error(self) -> str | None:
        return self.client.last_error

    @property
    def connected_since_ms(self) -> int | None:
        return self.client.connected_since_ms

    def add_listener(self, listener: Callable[[BrokerEvent], None]) -> None:
        """Call ``listener(event)`` synchronously on DISCONNECTED and RECONNECTED (e.g. to save
        the account's state); ``events()`` carries the same events plus orders and fills."""
        self.client.add_listener(listener)

    def remove_listener(self, listener: Callable[[BrokerEvent], None]) -> None:
        self.client.remove_listener(listener)

    async def connect(self) -> None:
        await self.client.connect()
        if not self._events_subscribed:
            try:
                await self.client.subscribe(self.event_channels, self._on_changes)
            except BaseException:
                await self.client.close()  # without its events the broker is not usable
                raise
            self._events_subscribed = True

    async def disconnect(self) -> None:
        await self.client.close()

    def _on_connection_event(self, event: BrokerEvent) -> None:
        self._convert_changes()  # the account's changes heard before it come first
        self._publish(event)
        if event.kind is EventKind.DISCONNECTED and not self.client.reconnecting:
            for queue in self._candle_queues:
                queue.put_nowait(_LOST)
        elif event.kind is EventKind.RECONNECTED:
            for queue in self._candle_queues:
                queue.put_nowait(_RESUMED)

    def _publish(self, event: BrokerEvent) -> None:
        for queue in self._event_queues:
            queue.put_nowait(event)

    def pushes_account_changes(self, currency: str) -> bool:
        """Every order, trade and position change of the account's futures in ``currency``
        arrives on ``user.changes`` (to ``events()`` listeners)."""
        return currency in self.currencies

    def _on_changes(self, data: Any) -> None:
        """``user.changes.*``: orders, trades and positions of one matching event.

        Converted into events on the next turn of the event loop, after the callbacks already
        due: Deribit (and the simulator) may send the changes an order made ahead of the
        order's answer, and an answer read in the same turn then reaches its caller first (a
        bracket's acknowledgement is not held up by the notification's conversion). The
        events keep their order, also with the connection's events (``_on_connection_event``).
        """
        if not self._event_queues or not isinstance(data, dict):
            return  # nobody listens: do not spend the hot path converting
        self._changes.append((data, _now_ms()))
        if len(self._changes) == 1:
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._convert_changes)

    def _convert_changes(self) -> None:
        while self._changes:
            data, now = self._changes.popleft()
            try:
                self._publish_changes(data, now)
            except Exception:  # one malformed notification must not hold up the next
                logger.exception("deribit: cannot convert a user.changes notification")

    def _publish_changes(self, data: dict[str, Any], now: int) -> None:
        for raw in data.get("orders") or ():
            self._publish(BrokerEvent(EventKind.ORDER, codec.order_from_deribit(raw), now))
        for raw in data.get("trades") or ():
            self._publish(BrokerEvent(EventKind.FILL, codec.fill_from_deribit(raw), now))
        for raw in data.get("positions") or ():
            self._publish(BrokerEvent(EventKind.POSITION, codec.position_from_deribit(raw), now))

    def events(self) -> AsyncIterator[BrokerEvent]:
        """ORDER, FILL and POSITION events from ``user.changes``, plus DISCONNECTED/RECONNECTED.

        Each call is an independent stream; it collects from the moment of the call.
        """
        return _EventStream(self)

    # --- account and market data --------------------------------------------------------

    async def account_summary(self, currency: str) -> AccountSummary:
        result = await self.client.call("private/get_account_summary", {"currency": currency})
        return codec.account_from_deribit(result)

    async def instruments(self) -> list[InstrumentSpec]:
        """The active perpetuals of the configured currencies, read from the exchange."""
        specs: list[InstrumentSpec] = []
        for currency in self.currencies:
            result = await self.client.call(
                "public/get_instruments", {"currency": currency, "kind": "future"}
            )
            for raw in result or ():
                if codec.is_perpetual(raw) and raw.get("is_active", True):
                    spec = codec.instrument_from_deribit(raw)
                    self._specs[spec.name] = spec
                    specs.append(spec)
        return specs

    async def instrument(self, name: str) -> InstrumentSpec:
        result = await self.client.call("public/get_instrument", {"instrument_name": name})
        spec = codec.instrument_from_deribit(result)
        self._specs[spec.name] = spec
        return spec

    async def _settlement_currency(self, instrument: str) -> str:
        spec = self._specs.get(instrument) or await self.instrument(instrument)
        return spec.settlement_currency

    async def ticker(self, instrument: str) -> Ticker:
        result = await self.client.call("public/ticker", {"instrument_name": instrument})
        return codec.ticker_from_deribit(result)

    async def candles(
        self, instrument: str, resolution_minutes: int, start_ms: int, end_ms: int
    ) -> list[Candle]:
        result = await self.client.call(
            "public/get_tradingview_chart_data",
            {
                "instrument_name": instrument,
                "start_timestamp": start_ms,
                "end_timestamp": end_ms,
                "resolution": codec.resolution_text(resolution_minutes),
            },
        )
        candles = codec.candles_from_chart_data(result or {})
        return sorted(
            (c for c in candles if start_ms <= c.open_time_ms <= end_ms),
            key=lambda c: c.open_time_ms,
        )

    async def closed_candles(
        self, instrument: str, resolution_minutes: int
    ) -> AsyncIterator[Candle]:
        """Closed candles from ``chart.trades``: a new tick means the previous candle closed.

        After an automatic reconnect the candles that closed meanwhile are read from the
        chart history. A lost connection that will not come back raises ``ConnectionLost``.
        """
        channel = f"chart.trades.{instrument}.{codec.resolution_text(resolution_minutes)}"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._candle_queues.add(queue)
        try:
            await self.client.subscribe([channel], queue.put_nowait)
            last: Candle | None = None
            resumed = False
            while True:
                item = await queue.get()
                if item is _LOST:
                    raise ConnectionLost(f"{channel}: connection lost")
                if item is _RESUMED:
                    resumed = True
                    continue
                candle = codec.candle_from_chart_update(item)
                if last is None or candle.open_time_ms == last.open_time_ms:
                    last = candle  # the forming candle; later updates bring it up to date
                    resumed = False
                    continue
                if candle.open_time_ms < last.open_time_ms:
                    continue  # a late update of a candle already yielded
                closed = [last]
                if resumed:
                    closed = await self._candles_missed(
                        instrument, resolution_minutes, last, candle.open_time_ms
                    )
                last, resumed = candle, False
                for one in closed:
                    yield one
        finally:
            self._candle_queues.discard(queue)
            if self.client.state is ConnectionState.CONNECTED:
                await self.client.unsubscribe([channel], queue.put_nowait)

    async def _candles_missed(
        self, instrument: str, resolution_minutes: int, last: Candle, forming_ms: int
    ) -> list[Candle]:
        try:
            history = await self.candles(
                instrument, resolution_minutes, last.open_time_ms, forming_ms - 1
            )
        except BrokerError as exc:
            logger.warning("deribit: closed candles after reconnect not readable: %s", exc)
            history = []
        return [c for c in history if c.open_time_ms < forming_ms] or [last]

    # --- orders -------------------------------------------------------------------------

    async def place_bracket(self, request: BracketRequest) -> BracketResult:
        """Entry + reduce-only stop + take-profit in ONE exchange-linked request (OTOCO).

        Raises ``OrderOutcomeUnknown`` when the answer is lost: call ``resolve_bracket``, never
        place it again. ``OrderRejected`` etc. mean nothing was placed.
        """
        method, params = codec.bracket_params(request, take_profit_type=self.take_profit_type)
        self._stamp_valid_until(params, request.bracket_id, since_ms=request.valid_from_ms)
        try:
            result = await self.client.call(method, params, timeout=self.order_timeout)
        except OrderOutcomeUnknown:
            logger.warning("deribit bracket %s: outcome unknown", request.bracket_id)
            raise
        except BaseException:
            self._unknown_deadlines.pop(request.bracket_id, None)  # known: not placed
            raise
        acked_at = time.perf_counter()  # the exchange's answer: the set exists
        self._unknown_deadlines.pop(request.bracket_id, None)
        entry = codec.order_from_deribit(result["order"])
        try:
            legs = await self._bracket_from_entry(entry, request)
            return dataclasses.replace(legs, acked_at=acked_at)
        except BrokerError as exc:
            # The bracket is on the exchange; only reading its legs failed.
            raise OrderOutcomeUnknown(
                f"bracket {request.bracket_id} placed as {entry.order_id} but its legs could "
                f"not be read: {exc}",
                code="legs_unreadable",
                data={"entry_order_id": entry.order_id},
            ) from exc

    def _stamp_valid_until(
        self, params: dict[str, Any], bracket_id: str, *, since_ms: int | None = None
    ) -> None:
        """Ask the matching engine to drop the request if it cannot start before we give up.

        Then an answer lost to a timeout leaves a state that is final once ``valid_until``
        has passed: ``resolve_bracket`` waits for that moment before it looks. ``since_ms``:
        count from that earlier moment (an armed intent's fire time, which is what a crash's
        reconcile knows).
        """
        self._unknown_deadlines[bracket_id] = time.monotonic() + self.order_timeout
        if self.use_valid_until:
            start = _now_ms() if since_ms is None else min(_now_ms(), since_ms)
            params["valid_until"] = start + int(self.order_timeout * 1000)

    async def resolve_bracket(
        self, request: BracketRequest, *, sent_at_ms: int | None = None
    ) -> BracketResult | None:
        """What became of a bracket whose placement answer was lost, found by its labels.

        Returns the BracketResult if the entry exists (in any state), None if nothing with its
        labels exists. Raises ``BrokerError`` if legs exist without an entry (inconsistent).

        It first waits until the request can no longer be executed (its ``valid_until``): this
        broker remembers that for brackets it sent; after a restart pass ``sent_at_ms`` (when the
        intent was recorded, wall clock) so a request still in flight cannot appear later.
        """
        deadline = self._unknown_deadlines.pop(request.bracket_id, None)
        if deadline is not None:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()) + RESOLVE_GRACE_S)
        elif sent_at_ms is not None:
            expires_ms = sent_at_ms + self.order_timeout * 1000
            await asyncio.sleep(max(0.0, (expires_ms - _now_ms()) / 1000) + RESOLVE_GRACE_S)
        currency = await self._settlement_currency(request.instrument)
        entry_label, stop_label, tp_label = request.labels
        entries = [
            o
            for o in await self.orders_by_label(entry_label, currency)
            if o.instrument in ("", request.instrument)
        ]
        if not entries:
            legs = await self.orders_by_label(stop_label, currency)
            legs += await self.orders_by_label(tp_label, currency)
            if legs:
                raise BrokerError(
                    f"bracket {request.bracket_id}: legs without an entry",
                    code="inconsistent_bracket",
                    data={"orders": [o.order_id for o in legs]},
                )
            return None
        entries.sort(key=lambda o: (o.created_ms, o.order_id))
        if len(entries) > 1:
            logger.error(
                "deribit bracket %s has %d entries: %s",
                request.bracket_id,
                len(entries),
                [o.order_id for o in entries],
            )
        return await self._bracket_from_entry(entries[0], request)

    async def _bracket_from_entry(self, entry: Order, request: BracketRequest) -> BracketResult:
        _, stop_label, tp_label = request.labels
        # Both legs are read at once: one round trip more than the placement, not two.
        legs = list(await asyncio.gather(*(self.order_state(i) for i in entry.linked_order_ids)))
        if len(legs) < 2:
            currency = await self._settlement_currency(request.instrument)
            legs = await self.orders_by_label(stop_label, currency)
            legs += await self.orders_by_label(tp_label, currency)
        stop = next((o for o in legs if o.label == stop_label), None)
        take = next((o for o in legs if o.label == tp_label), None)
        if stop is None:
            stop = next((o for o in legs if o.order_type.startswith("stop")), None)
        if take is None:
            take = next((o for o in legs if o is not stop), None)
        if stop is None or take is None:
            raise BrokerError(
                f"bracket {request.bracket_id}: entry {entry.order_id} has no stop and target",
                code="incomplete_bracket",
                data={"entry": entry.order_id, "legs": [o.order_id for o in legs]},
            )
        return BracketResult(entry=entry, stop_loss=stop, take_profit=take)

    async def place_order(self, request: OrderRequest) -> Order:
        method, params = codec.order_params(request)
        result = await self.client.call(method, params, timeout=self.order_timeout)
        return codec.order_from_deribit(result["order"])

    async def cancel(self, order_id: str) -> Order:
        """Cancel; an order already filled or cancelled is returned as it is, not raised."""
        try:
            result = await self.client.call(
                "private/cancel", {"order_id": order_id}, timeout=self.order_timeout
            )
        except OrderRejected as exc:
            if exc.code in ALREADY_CLOSED_CODES:
                return await self.order_state(order_id)
            raise
        return codec.order_from_deribit(result)

    async def open_orders(
        self, instrument: str | None = None, label_prefix: str | None = None
    ) -> list[Order]:
        if instrument:
            result = await self.client.call(
                "private/get_open_orders_by_instrument",
                {"instrument_name": instrument, "type": "all"},
            )
        else:
            result = await self.client.call("private/get_open_orders", {"type": "all"})
        orders = [codec.order_from_deribit(raw) for raw in result or ()]
        if label_prefix:
            orders = [o for o in orders if o.label.startswith(label_prefix)]
        return orders

    async def order_state(self, order_id: str) -> Order:
        result = await self.client.call("private/get_order_state", {"order_id": order_id})
        return codec.order_from_deribit(result)

    async def orders_by_label(self, label: str, currency: str) -> list[Order]:
        try:
            result = await self.client.call(
                "private/get_order_state_by_label", {"currency": currency, "label": label}
            )
        except NotFound:
            return []
        return [codec.order_from_deribit(raw) for raw in result or ()]

    async def positions(self, currency: str | None = None) -> list[Position]:
        currencies = (currency,) if currency else self.currencies
        answers = await asyncio.gather(  # every currency at once: one round trip
            *(
                self.client.call("private/get_positions", {"currency": one, "kind": "future"})
                for one in currencies
            )
        )
        found = [codec.position_from_deribit(raw) for result in answers for raw in result or ()]
        return [p for p in found if p.size != 0]

    async def close_position(self, instrument: str) -> Order | None:
        """Close the whole position at market (reduce-only); None when there is none."""
        currency = await self._settlement_currency(instrument)
        held = [p for p in await self.positions(currency) if p.instrument == instrument]
        if not held:
            return None
        result = await self.client.call(
            "private/close_position",
            {"instrument_name": instrument, "type": "market"},
            timeout=self.order_timeout,
        )
        return codec.order_from_deribit(result["order"])

    async def fills(self, instrument: str, since_ms: int = 0) -> list[Fill]:
        """Our fills on ``instrument`` since ``since_ms``, oldest first, each once."""
        seen: dict[str, Fill] = {}
        start = since_ms
        for _ in range(100):  # 100 pages of 1000 fills is far beyond one run
            params: dict[str, Any] = {
                "instrument_name": instrument,
                "count": 1000,
                "sorting": "asc",
            }
            if start:
                params["start_timestamp"] = start
            result = await self.client.call("private/get_user_trades_by_instrument", params)
            trades = result.get("trades", []) if isinstance(result, dict) else result or []
            fresh = [codec.fill_from_deribit(raw) for raw in trades]
            new = [f for f in fresh if f.trade_id not in seen]
            for fill in new:
                seen[fill.trade_id] = fill
            has_more = isinstance(result, dict) and result.get("has_more")
            if not has_more or not new:
                break
            start = max(f.timestamp_ms for f in fresh)
        return sorted(
            (f for f in seen.values() if f.timestamp_ms >= since_ms),
            key=lambda f: (f.timestamp_ms, f.trade_id),
        )
