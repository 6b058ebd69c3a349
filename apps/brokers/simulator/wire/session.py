"""One client connection (a WebSocket, or a single HTTP request) and what it holds."""

from __future__ import annotations

import asyncio
import itertools
import socket
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
        """Drain the outbox onto the socket until the session closes.

        What was queued together leaves together: the frames of one burst (an order's
        notifications and its answer) are written corked, so they reach the client in one
        segment and wake it once, as an exchange's gateway sends them, instead of waking it
        for the first frame while the next waits behind its processing."""
        assert self.ws is not None
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            corked = len(batch) > 1 and self._cork(True)
            try:
                for item in batch:
                    if item is None or self.ws.closed:
                        return
                    if item is _DROP:
                        if corked:
                            corked = not self._cork(False)
                        await asyncio.sleep(0.01)  # let the kernel flush the last frame
                        self.drop()
                        return
                    try:
                        await self.ws.send_str(str(item))
                    except (ConnectionError, RuntimeError):
                        return
            finally:
                if corked:
                    self._cork(False)

    def _cork(self, on: bool) -> bool:
        """TCP_CORK on the connection's socket (Linux); False where it cannot be set."""
        option = getattr(socket, "TCP_CORK", None)
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if option is None or sock is None:
            return False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, 1 if on else 0)
        except OSError:
            return False
        return True

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
