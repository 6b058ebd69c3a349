"""One client connection (a WebSocket, or a single HTTP request) and what it holds."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apps.brokers.simulator.wire.codec import dumps

if TYPE_CHECKING:
    from aiohttp import web

    from apps.brokers.simulator.wire.auth import Grant

_session_ids = itertools.count(1)
_DROP = object()


@dataclass(eq=False)
class Session:
    """State of one connection. Outgoing messages go through a queue so that ``send`` never
    blocks the engine and the order of messages on the socket is the order they were sent."""

    ws: web.WebSocketResponse | None = None
    transport: asyncio.Transport | None = None
    id: int = field(default_factory=lambda: next(_session_ids))
    grant: Grant | None = None
    subscriptions: dict[str, str | None] = field(default_factory=dict)  # channel -> label
    heartbeat_interval: float | None = None
    test_request_pending: bool = False
    cancel_on_disconnect: bool = False
    order_ids: set[str] = field(default_factory=set)  # created over this connection (for COD)
    closed: bool = False
    logged_out: bool = False
    drop_after_answer: bool = False
    _outbox: asyncio.Queue[str | object | None] = field(default_factory=asyncio.Queue)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def is_websocket(self) -> bool:
        return self.ws is not None

    def send(self, message: dict[str, Any]) -> None:
        if not self.closed and self.ws is not None:
            self._outbox.put_nowait(dumps(message))

    def drop_when_written(self) -> None:
        """Cut the connection once everything queued so far is on the wire."""
        self._outbox.put_nowait(_DROP)

    async def write_loop(self) -> None:
        """Drain the outbox onto the socket until the session closes."""
        assert self.ws is not None
        while True:
            item = await self._outbox.get()
            if item is None or self.ws.closed:
                return
            if item is _DROP:
                await asyncio.sleep(0.01)  # let the kernel flush the last frame
                self.drop()
                return
            try:
                await self.ws.send_str(str(item))
            except (ConnectionError, RuntimeError):
                return

    def stop_writing(self) -> None:
        self._outbox.put_nowait(None)

    def drop(self) -> None:
        """Cut the TCP connection without a close frame, as a network failure would."""
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        self.stop_writing()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
