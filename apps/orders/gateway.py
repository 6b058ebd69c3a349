"""A synchronous face for an async Broker: its own event loop in a daemon thread.

The runner and the bracket service are synchronous (the Django ORM is), the brokers are async.
``BrokerGateway`` keeps one event loop for the broker's whole life (its WebSocket lives there),
runs each call on it and waits for the answer. Streams (closed candles, broker events) are
pumped into one thread-safe queue that the loop reads with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from apps.brokers.base import (
    BracketRequest,
    BracketResult,
    Broker,
    ConnectionLost,
    EventKind,
)
from apps.monitoring import metrics

log = logging.getLogger("tradebaas.gateway")
T = TypeVar("T")
INBOX_LIMIT = 5000  # items waiting for the loop; about 3.5 days of 1-minute candles


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One thing that arrived: ``kind`` is "candle", "event" or "stream_end"."""

    kind: str
    payload: Any
    received: float  # time.perf_counter() when it arrived


class BrokerGateway:
    def __init__(self, broker: Broker, *, timeout: float = 60.0) -> None:
        self.broker = broker
        self.timeout = timeout
        self.inbox: queue.Queue[StreamItem] = queue.Queue()
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, name=f"broker-{broker.broker_id}", daemon=True
        )
        self._tasks: list[asyncio.Task] = []
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def supports_linked_orders(self) -> bool:
        return bool(getattr(self.broker, "supports_linked_orders", False))

    def pushes_account_changes(self, currency: str) -> bool:
        """Every order, fill and position change in ``currency`` reaches the inbox as an event:
        the broker pushes them and the streams run. Then what was read of the account stays
        true until an event arrives."""
        probe = getattr(self.broker, "pushes_account_changes", None)
        return bool(self._tasks) and callable(probe) and bool(probe(currency))

    @property
    def broker_id(self) -> str:
        return self.broker.broker_id

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout or self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``broker.<method>(*args)`` on the broker's loop, timed in BROKER_REQUEST."""
        started = time.perf_counter()
        try:
            return self.run(getattr(self.broker, method)(*args, **kwargs))
        finally:
            metrics.BROKER_REQUEST.labels(method=method).observe(time.perf_counter() - started)

    def call_all(self, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Several reads at once: ``broker.<method>(*args)`` for each, sent together on the
        broker's loop (one round trip instead of one each). Results in order; an exception is
        returned in its place, not raised (the caller decides). Only for reads whose relative
        order does not matter."""

        async def timed(method: str, args: tuple[Any, ...]) -> Any:
            started = time.perf_counter()
            try:
                return await getattr(self.broker, method)(*args)
            finally:
                metrics.BROKER_REQUEST.labels(method=method).observe(time.perf_counter() - started)

        async def every() -> list[Any]:
            return await asyncio.gather(
                *(timed(method, args) for method, args in calls), return_exceptions=True
            )

        return self.run(every())

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the broker's loop (for in-process engines that are not thread-safe)."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    # --- the calls the runner uses ----------------------------------------------------------

    def connect(self) -> None:
        self.call("connect")

    def place_bracket(self, request: BracketRequest) -> BracketResult:
        return self.call("place_bracket", request)

    def resolve_bracket(
        self, request: BracketRequest, *, sent_at_ms: int | None = None
    ) -> BracketResult | None:
        """Find a bracket whose answer was lost by its labels. ``sent_at_ms`` (wall clock, when
        its intent was recorded): the broker waits until a request sent then can no longer be
        executed (its ``valid_until``) before it looks; needed after a restart, when the broker
        object that sent it (and remembered the deadline) is gone."""
        if sent_at_ms is None:
            return self.call("resolve_bracket", request)
        return self.call("resolve_bracket", request, sent_at_ms=sent_at_ms)

    @property
    def can_resolve_bracket(self) -> bool:
        return hasattr(self.broker, "resolve_bracket")

    # --- streams ----------------------------------------------------------------------------

    def _enqueue(self, item: StreamItem) -> None:
        """Put a candle or an event; past ``INBOX_LIMIT`` the oldest candle/event is dropped
        (counted and logged) so a loop that falls behind never grows without bound. An end of
        stream is never dropped. Events are hints only: positions and legs are read again."""
        with self.inbox.mutex:
            pending = self.inbox.queue
            if len(pending) >= INBOX_LIMIT:
                for index, queued in enumerate(pending):
                    if queued.kind != "stream_end":
                        del pending[index]
                        self.dropped += 1
                        break
        if self.dropped and self.dropped % 1000 == 1:
            log.warning(
                "broker inbox full: %d old items dropped (the loop falls behind)", self.dropped
            )
        self.inbox.put(item)

    def start_streams(self, instrument: str, resolution_minutes: int) -> None:
        """Pump closed candles and broker events into ``inbox``."""

        async def pump(kind: str, source: Callable[[], AsyncIterator[Any]]) -> None:
            try:
                async for item in source():
                    self._enqueue(StreamItem(kind, item, time.perf_counter()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.inbox.put(StreamItem("stream_end", exc, time.perf_counter()))
                return
            self.inbox.put(
                StreamItem(
                    "stream_end", ConnectionLost(f"{kind} stream ended"), time.perf_counter()
                )
            )

        async def start() -> None:
            self._tasks.append(
                asyncio.create_task(
                    pump(
                        "candle", lambda: self.broker.closed_candles(instrument, resolution_minutes)
                    )
                )
            )
            self._tasks.append(asyncio.create_task(pump("event", self.broker.events)))

        self.run(start())

    def next_item(self, timeout: float) -> StreamItem | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def has_waiting(self) -> bool:
        """Something is in the inbox already."""
        return not self.inbox.empty()

    def next_queued(self) -> StreamItem | None:
        """The next item if one is already waiting; never waits."""
        try:
            return self.inbox.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        async def stop() -> None:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.disconnect(), timeout=5)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.run(stop(), timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self.loop.is_running():
            with contextlib.suppress(Exception):
                self.loop.close()


def is_disconnect(item: StreamItem) -> bool:
    return item.kind == "event" and getattr(item.payload, "kind", None) is EventKind.DISCONNECTED
