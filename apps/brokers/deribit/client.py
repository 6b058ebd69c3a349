"""DeribitClient: JSON-RPC 2.0 over ONE WebSocket to Deribit API v2 (or the simulator).

Django-free: the caller passes the URL and credentials. What it does:
- authenticates with ``client_credentials`` and refreshes the token (``refresh_token`` grant)
  before it lapses;
- asks for heartbeats and answers every ``test_request`` with ``public/test``;
- correlates answers by request id, with a timeout per request; an order-changing request that
  times out or loses its socket raises ``OrderOutcomeUnknown`` (look it up by label), any other
  ``RetryableError`` (timeout) or ``ConnectionLost`` (socket gone);
- maps every error answer to a typed exception (``errors.py``);
- keeps subscriptions and makes them again after a reconnect;
- auto-reconnect is OFF by default: a lost socket emits ``BrokerEvent(DISCONNECTED)`` and the
  client stays down until ``connect()`` is called. With ``auto_reconnect=True`` it retries with
  exponential back-off and jitter, re-authenticates, re-subscribes and emits ``RECONNECTED``
  with the attempt number.
It never enables cancel-on-disconnect: that would cancel the stop of an open position.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from apps.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    BrokerEvent,
    ConnectionLost,
    ConnectionState,
    EventKind,
    OrderOutcomeUnknown,
    RetryableError,
)
from apps.brokers.deribit.backoff import TokenBucket, backoff_delays
from apps.brokers.deribit.codec import decode_message, encode_request
from apps.brokers.deribit.errors import error_from_rpc

logger = logging.getLogger("apps.brokers.deribit")

MAINNET_URL = "wss://www.deribit.com/ws/api/v2"
TESTNET_URL = "wss://test.deribit.com/ws/api/v2"

# Requests that may change what is on the exchange (Deribit's matching-engine methods): when their
# answer is lost, the outcome is unknown, not failed.
ORDER_CHANGING_METHODS = frozenset(
    {
        "private/buy",
        "private/sell",
        "private/edit",
        "private/edit_by_label",
        "private/cancel",
        "private/cancel_all",
        "private/cancel_all_by_instrument",
        "private/cancel_all_by_currency",
        "private/cancel_all_by_currency_pair",
        "private/cancel_all_by_kind_or_type",
        "private/cancel_by_label",
        "private/cancel_quotes",
        "private/close_position",
        "private/move_positions",
        "private/execute_block_trade",
    }
)

Handler = Callable[[Any], None]
Listener = Callable[[BrokerEvent], None]


class _Secret:
    """Holds a secret so that no repr, log line or traceback variable dump shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def mask(value: str) -> str:
    """``"…abcd"``: enough to tell two keys apart, not enough to use one."""
    return f"…{value[-4:]}" if len(value) > 4 else "…"


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeribitClient:
    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        heartbeat_interval: float | None = 30,
        auto_reconnect: bool = False,
        reconnect_base_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        max_reconnect_attempts: int | None = None,
        refresh_fraction: float = 0.8,
        guard_cancel_on_disconnect: bool = True,
        rate_limits: tuple[tuple[float, float], tuple[float, float]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive (Deribit's minimum is 10 s)")
        self.url = url
        self.client_id = client_id
        self._secret = _Secret(client_secret)
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.heartbeat_interval = heartbeat_interval
        self.auto_reconnect = auto_reconnect
        self.reconnect_base_delay = reconnect_base_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.max_reconnect_attempts = max_reconnect_attempts
        self.refresh_fraction = refresh_fraction
        self.guard_cancel_on_disconnect = guard_cancel_on_disconnect
        # ((rate, burst) of matching-engine requests, (rate, burst) of the others); None: no pacing
        self._buckets: tuple[TokenBucket, TokenBucket] | None = None
        if rate_limits is not None:
            (me_rate, me_burst), (rate, burst) = rate_limits
            self._buckets = (TokenBucket(me_rate, me_burst), TokenBucket(rate, burst))
        self._rng = rng or random.Random()

        self._state = ConnectionState.DISCONNECTED
        self.last_error: str | None = None
        self.connected_since_ms: int | None = None
        self.scope: str = ""
        self._ws: ClientConnection | None = None
        self._generation = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], str]] = {}
        self._channels: dict[str, list[Handler]] = {}
        self._listeners: list[Listener] = []
        self._access_token = _Secret("")
        self._refresh_token = _Secret("")
        self._expires_in = 0.0
        self._reader: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._last_heard = 0.0
        self._dead_reason: str | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._connect_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"DeribitClient(url={self.url!r}, client_id={self.masked_client_id!r}, "
            f"state={self._state.value})"
        )

    @property
    def masked_client_id(self) -> str:
        """The API key as logs and reprs show it: its last 4 characters only."""
        return mask(self.client_id)

    # --- state and events ---------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def reconnecting(self) -> bool:
        """True while the auto-reconnect loop is trying to bring the connection back."""
        return self._reconnector is not None and not self._reconnector.done()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(BrokerEvent)`` on DISCONNECTED and RECONNECTED."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, kind: EventKind, payload: Any) -> None:
        event = BrokerEvent(kind=kind, payload=payload, timestamp_ms=_now_ms())
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a listener's bug must not break the connection
                logger.exception("deribit event listener failed")

    def _secrets(self) -> tuple[str, ...]:
        return (self._secret.get(), self._access_token.get(), self._refresh_token.get())

    # --- connect / close ----------------------------------------------------------------

    async def connect(self) -> None:
        """Open, authenticate, ask for heartbeats, make the subscriptions. Idempotent.

        Raises ``AuthenticationFailed`` (credentials refused; nothing stays connected) or
        ``ConnectionLost`` (the endpoint cannot be reached).
        """
        async with self._connect_lock:
            if self._state is ConnectionState.CONNECTED:
                return
            self._stop_reconnector()
            self._state = ConnectionState.CONNECTING
            try:
                await self._open()
            except BrokerError as exc:
                self._state = ConnectionState.DISCONNECTED
                self.last_error = str(exc)
                raise

    async def close(self) -> None:
        """Close on purpose: no reconnect follows. Emits DISCONNECTED if it was connected."""
        self._closing = True
        try:
            self._stop_reconnector()
            ws, reader = self._ws, self._reader
            if ws is not None:
                await ws.close()
            if reader is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(reader), 5)
                except (TimeoutError, asyncio.CancelledError):
                    reader.cancel()
            self._teardown("closed by client")
        finally:
            self._closing = False

    def _stop_reconnector(self) -> None:
        task = self._reconnector
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._reconnector = None

    async def _open(self) -> None:
        try:
            ws = await connect(
                self.url,
                open_timeout=self.connect_timeout,
                close_timeout=2,
                compression=None,
                max_size=2**23,
                proxy=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectionLost(f"cannot connect to {self.url}: {exc}") from None
        self._generation += 1
        generation = self._generation
        self._ws = ws
        self._reader = asyncio.create_task(self._read_loop(ws, generation))
        try:
            await self._authenticate({"grant_type": "client_credentials"})
            if self.guard_cancel_on_disconnect:
                await self._refuse_cancel_on_disconnect()
            if self.heartbeat_interval:
                await self._request("public/set_heartbeat", {"interval": self.heartbeat_interval})
            if self._channels:
                await self._subscribe_at_server(list(self._channels))
        except BaseException:
            self._generation += 1  # the reader of this socket must not report a loss
            self._ws = None
            await ws.close()
            self._fail_pending(ConnectionLost, "connection closed during connect")
            raise
        if generation != self._generation:  # lost between the last answer and here
            raise ConnectionLost("connection closed during connect")
        self._state = ConnectionState.CONNECTED
        self.connected_since_ms = _now_ms()
        self.last_error = None
        self._refresher = asyncio.create_task(self._refresh_loop(generation))
        if self.heartbeat_interval:
            self._watchdog = asyncio.create_task(self._watch_silence(ws, generation))

    async def _authenticate(self, grant: dict[str, Any]) -> None:
        params = dict(grant)
        if grant["grant_type"] == "client_credentials":
            params["client_id"] = self.client_id
            params["client_secret"] = self._secret.get()
        else:
            params["refresh_token"] = self._refresh_token.get()
        result = await self._request("public/auth", params)
        if not isinstance(result, dict) or "access_token" not in result:
            raise AuthenticationFailed("public/auth answered without an access token")
        self._access_token = _Secret(str(result["access_token"]))
        self._refresh_token = _Secret(str(result.get("refresh_token", "")))
        self._expires_in = float(result.get("expires_in") or 0)
        self.scope = str(result.get("scope", ""))
        logger.info("deribit authenticated as %s (scope %s)", self.masked_client_id, self.scope)

    async def _refresh_loop(self, generation: int) -> None:
        """Refresh the token at ``refresh_fraction`` of its lifetime; if that fails, log in again."""
        while generation == self._generation and self._state is ConnectionState.CONNECTED:
            if self._expires_in <= 0:
                return
            await asyncio.sleep(max(0.2, self._expires_in * self.refresh_fraction))
            if generation != self._generation:
                return
            try:
                await self._authenticate({"grant_type": "refresh_token"})
                logger.info("deribit token refreshed")
            except (ConnectionLost, OrderOutcomeUnknown):
                return
            except BrokerError as exc:
                logger.warning("deribit token refresh failed (%s); logging in again", exc.code)
                try:
                    await self._authenticate({"grant_type": "client_credentials"})
                except BrokerError as again:
                    self.last_error = f"token refresh failed: {again}"
                    ws = self._ws
                    if ws is not None and generation == self._generation:
                        await ws.close(reason="token refresh failed")
                    return

    async def _refuse_cancel_on_disconnect(self) -> None:
        """Make sure this connection does NOT cancel orders when it ends.

        An account-scope setting turns cancel-on-disconnect on for every new connection; on this
        one it would cancel the stop of an open position at the first network hiccup. If it is
        on, switch it off for the connection; if that fails, the connect fails.
        """
        try:
            state = await self._request("private/get_cancel_on_disconnect", {"scope": "connection"})
        except (ConnectionLost, RetryableError):
            raise
        except BrokerError as exc:  # e.g. 13021 forbidden: the key may not read it
            logger.warning("deribit: cannot read cancel-on-disconnect (%s)", exc)
            return
        if isinstance(state, dict) and state.get("enabled"):
            logger.warning("deribit: cancel-on-disconnect was on for this connection; disabling")
            await self._request("private/disable_cancel_on_disconnect", {"scope": "connection"})

    async def _watch_silence(self, ws: ClientConnection, generation: int) -> None:
        """A half-open link answers nothing and sends nothing, yet the socket looks open.

        With heartbeats on, Deribit speaks at least every interval; silence for 2.5 intervals
        means the link is dead: close it, so that the loss is reported (DISCONNECTED) instead of
        every request timing out on a connection that claims to be up.
        """
        assert self.heartbeat_interval
        limit = self.heartbeat_interval * 2.5
        while generation == self._generation:
            silent = time.monotonic() - self._last_heard
            if silent > limit:
                self._dead_reason = f"no message from the server for {silent:.1f}s (heartbeat)"
                logger.warning("deribit %s; closing the socket", self._dead_reason)
                await ws.close(code=1011, reason="heartbeat timeout")
                return
            await asyncio.sleep(max(0.05, limit - silent))

    # --- reading ------------------------------------------------------------------------

    async def _read_loop(self, ws: ClientConnection, generation: int) -> None:
        reason = "connection closed"
        self._last_heard = time.monotonic()
        try:
            async for raw in ws:
                self._last_heard = time.monotonic()
                try:
                    self._dispatch(decode_message(raw))
                except Exception:
                    logger.exception("deribit: cannot handle a message")
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"reader failed: {exc}"
            logger.exception("deribit reader failed")
        finally:
            if self._dead_reason is not None:
                reason, self._dead_reason = self._dead_reason, None
            elif ws.close_code is not None:
                reason = f"connection closed (code {ws.close_code} {ws.close_reason})".strip()
            if generation == self._generation:
                self._connection_lost(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if request_id is not None:
            entry = self._pending.pop(request_id, None)
            if entry is None:
                return  # a timed-out request or our own heartbeat answer
            future, method = entry
            if future.done():
                return
            if "error" in message:
                future.set_exception(
                    error_from_rpc(message["error"], method=method, redact=self._secrets())
                )
            else:
                future.set_result(message.get("result"))
            return
        method = message.get("method")
        params = message.get("params") or {}
        if method == "subscription":
            for handler in list(self._channels.get(params.get("channel", ""), ())):
                try:
                    handler(params.get("data"))
                except Exception:
                    logger.exception("deribit subscription handler failed")
        elif method == "heartbeat" and params.get("type") == "test_request":
            self._answer_test_request()

    def _answer_test_request(self) -> None:
        ws = self._ws
        if ws is None:
            return
        task = asyncio.create_task(ws.send(encode_request(next(self._ids), "public/test", {})))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("deribit heartbeat answer not sent: %s", task.exception())

    # --- losing the connection ----------------------------------------------------------

    def _fail_pending(self, default: type[BrokerError], reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future, method in pending.values():
            if future.done():
                continue
            if method in ORDER_CHANGING_METHODS:
                exc: BrokerError = OrderOutcomeUnknown(
                    f"{method}: {reason}; the outcome is unknown, look it up by label",
                    code="connection_lost",
                    data={"method": method},
                )
            else:
                exc = default(f"{method}: {reason}", code="connection_lost")
            future.set_exception(exc)

    def _teardown(self, reason: str) -> bool:
        """Mark the connection gone; True if it was connected (an event is due)."""
        was_connected = self._state is ConnectionState.CONNECTED
        self._generation += 1
        self._ws = None
        if self._refresher is not None and self._refresher is not asyncio.current_task():
            self._refresher.cancel()
        self._refresher = None
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None
        self._fail_pending(ConnectionLost, reason)
        self._state = ConnectionState.DISCONNECTED
        if was_connected:
            self.connected_since_ms = None
            self._emit(EventKind.DISCONNECTED, reason)
        return was_connected

    def _connection_lost(self, reason: str) -> None:
        if self._closing:
            return
        logger.warning("deribit connection lost: %s", reason)
        self.last_error = reason
        # Start the reconnector before the DISCONNECTED event goes out, so that listeners can
        # tell from ``reconnecting`` whether the connection will come back by itself.
        was_connected = self._state is ConnectionState.CONNECTED
        if was_connected and self.auto_reconnect and not self.reconnecting:
            self._reconnector = asyncio.create_task(self._reconnect_loop())
        self._teardown(reason)

    async def _reconnect_loop(self) -> None:
        delays = backoff_delays(self.reconnect_base_delay, self.reconnect_max_delay, rng=self._rng)
        for attempt in itertools.count(1):
            if self.max_reconnect_attempts is not None and attempt > self.max_reconnect_attempts:
                break
            delay = next(delays)
            logger.info("deribit reconnect attempt %d in %.2fs", attempt, delay)
            await asyncio.sleep(delay)
            async with self._connect_lock:
                if self._state is ConnectionState.CONNECTED:
                    return
                self._state = ConnectionState.CONNECTING
                try:
                    await self._open()
                except AuthenticationFailed as exc:
                    self._state = ConnectionState.DISCONNECTED
                    self.last_error = f"reconnect refused: {exc}"
                    self._reconnector = None  # listeners must see that nothing comes back
                    self._emit(EventKind.DISCONNECTED, self.last_error)
                    return
                except BrokerError as exc:
                    self._state = ConnectionState.DISCONNECTED
                    self.last_error = f"reconnect attempt {attempt} failed: {exc}"
                    logger.warning("deribit %s", self.last_error)
                    continue
            logger.info("deribit reconnected after %d attempt(s)", attempt)
            self._emit(EventKind.RECONNECTED, attempt)
            return
        self.last_error = f"gave up reconnecting after {self.max_reconnect_attempts} attempts"
        self._reconnector = None
        self._emit(EventKind.DISCONNECTED, self.last_error)

    # --- requests -----------------------------------------------------------------------

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send one request on the open connection and return its ``result``."""
        if self._state is not ConnectionState.CONNECTED:
            raise ConnectionLost(f"{method}: not connected ({self._state.value})")
        return await self._request(method, params, timeout)

    async def _request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        if self._buckets is not None:
            bucket = self._buckets[0 if method in ORDER_CHANGING_METHODS else 1]
            await bucket.acquire()
        ws = self._ws
        if ws is None:
            raise ConnectionLost(f"{method}: not connected")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, method)
        try:
            await ws.send(encode_request(request_id, method, params))
        except ConnectionClosed:
            # websockets refuses the frame before writing it: nothing reached the exchange.
            self._pending.pop(request_id, None)
            raise ConnectionLost(f"{method}: connection closed before sending") from None
        limit = self.request_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await future
        except asyncio.CancelledError:
            self._pending.pop(request_id, None)
            raise
        except TimeoutError:
            self._pending.pop(request_id, None)
            if method in ORDER_CHANGING_METHODS:
                raise OrderOutcomeUnknown(
                    f"{method}: no answer within {limit}s; the outcome is unknown, "
                    "look it up by label",
                    code="timeout",
                    data={"method": method, "request_id": request_id},
                ) from None
            raise RetryableError(
                f"{method}: no answer within {limit}s",
                code="timeout",
                data={"method": method, "request_id": request_id},
            ) from None

    # --- subscriptions ------------------------------------------------------------------

    async def subscribe(self, channels: list[str], handler: Handler) -> list[str]:
        """Call ``handler(data)`` for every notification on ``channels``; kept across reconnects."""
        new = [c for c in channels if c not in self._channels]
        for channel in channels:
            self._channels.setdefault(channel, []).append(handler)
        if not new:
            return list(channels)
        try:
            confirmed = await self._subscribe_at_server(new)
        except BaseException:
            self._drop_handler(channels, handler)
            raise
        refused = [c for c in new if c not in confirmed]
        if refused:
            self._drop_handler(refused, handler)
            raise BrokerError(f"subscription refused: {refused}", code="subscribe_refused")
        return list(channels)

    async def _subscribe_at_server(self, channels: list[str]) -> list[str]:
        if self._state is ConnectionState.CONNECTED:
            result = await self.call("private/subscribe", {"channels": channels})
        else:
            result = await self._request("private/subscribe", {"channels": channels})
        return [str(c) for c in result or ()]

    async def unsubscribe(self, channels: list[str], handler: Handler) -> None:
        emptied = self._drop_handler(channels, handler)
        if emptied and self._state is ConnectionState.CONNECTED:
            try:
                await self.call("private/unsubscribe", {"channels": emptied})
            except BrokerError as exc:
                logger.info("deribit unsubscribe failed: %s", exc)

    def _drop_handler(self, channels: list[str], handler: Handler) -> list[str]:
        emptied = []
        for channel in channels:
            handlers = self._channels.get(channel)
            if handlers and handler in handlers:
                handlers.remove(handler)
            if channel in self._channels and not self._channels[channel]:
                del self._channels[channel]
                emptied.append(channel)
        return emptied
