"""The simulator served as Deribit API v2: JSON-RPC over WebSocket (``/ws/api/v2``) and HTTP
(``/api/v2/{method}``) on one aiohttp port, plus the ``/_sim/`` fault-injection interface.

The engine is plain synchronous Python; every request runs it to completion before the next
await, so engine effects happen in the order requests arrived on the socket. Answers and
subscription notifications leave through a per-connection queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from apps.brokers.simulator import control
from apps.brokers.simulator.control import Faults
from apps.brokers.simulator.errors import ExchangeError
from apps.brokers.simulator.wire import (
    http,
    methods_market,  # noqa: F401  (registers methods)
    methods_session,  # noqa: F401  (registers methods)
    methods_trading,  # noqa: F401  (registers methods)
)
from apps.brokers.simulator.wire.auth import TokenStore
from apps.brokers.simulator.wire.channels import Channel
from apps.brokers.simulator.wire.channels import parse as parse_channel
from apps.brokers.simulator.wire.codec import (
    error_message,
    heartbeat,
    loads,
    notification,
    now_us,
    result_message,
)
from apps.brokers.simulator.wire.errors import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MUST_BE_WEBSOCKET,
    SYSTEM_MAINTENANCE,
    TOO_MANY_REQUESTS,
    RpcError,
    unauthorized,
)
from apps.brokers.simulator.wire.limits import RateLimits, TokenBucket
from apps.brokers.simulator.wire.market import MarketHub, SimOptions
from apps.brokers.simulator.wire.params import Params
from apps.brokers.simulator.wire.registry import METHODS, NO_ANSWER, Call
from apps.brokers.simulator.wire.session import Session

log = logging.getLogger(__name__)

__all__ = ["DeribitSimServer", "SimOptions"]


class DeribitSimServer:
    """Owns the sessions, the tokens, the faults and the market hub (engine + feed)."""

    def __init__(self, options: SimOptions | None = None, *, faults: Faults | None = None) -> None:
        self.options = options or SimOptions()
        self.faults = faults or Faults()
        self.faults._drop_all = self.drop_all
        self.tokens = TokenStore(
            client_id=self.options.client_id,
            client_secret=self.options.client_secret,
            ttl=self.options.token_ttl,
        )
        self.sessions: set[Session] = set()
        self.cancel_on_disconnect_account = False
        self.limits: RateLimits | None = None
        if self.options.rate_limits is not None:
            (me_rate, me_burst), (rate, burst) = self.options.rate_limits
            self.limits = RateLimits(TokenBucket(me_rate, me_burst), TokenBucket(rate, burst))
        self.market = MarketHub(self.options, publish=self.publish)
        self.faults._engine_faults = lambda: self.market.engine.faults
        self._channels: dict[str, Channel | None] = {}
        self._heartbeats: dict[int, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app = self._build_app()

    # -- the aiohttp application -------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/ws/api/v2", self.handle_websocket)
        app.router.add_get("/ws/api/v2/", self.handle_websocket)
        app.router.add_route("GET", "/api/v2/{scope}/{name}", self.handle_http)
        app.router.add_route("POST", "/api/v2/{scope}/{name}", self.handle_http)
        control.add_control_routes(app, self)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        await self.market.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.market.stop()
        for session in list(self.sessions):
            session.drop()

    # -- time, names ---------------------------------------------------------------------------
    def now_ms(self) -> int:
        return self.market.now_ms()

    def instrument_names(self) -> frozenset[str]:
        return self.market.instrument_names()

    # -- WebSocket -----------------------------------------------------------------------------
    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20, autoping=True)
        await ws.prepare(request)
        session = Session(ws=ws, transport=request.transport)
        session.cancel_on_disconnect = self.cancel_on_disconnect_account
        self.sessions.add(session)
        writer = asyncio.create_task(session.write_loop())
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_frame(session, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    self._on_frame(session, frame.data.decode("utf-8", errors="replace"))
                else:
                    break
        finally:
            await self._end_session(session)
            writer.cancel()
        return ws

    def _on_frame(self, session: Session, text: str) -> None:
        us_in = now_us()
        if len(text) > self.options.max_frame_bytes:
            error = RpcError(INVALID_REQUEST, "request entity too large")
            self._send_answer(
                session, error_message(None, error, us_in=us_in, testnet=self.options.testnet)
            )
            return
        try:
            request = loads(text)
        except RpcError as error:
            self._send_answer(
                session, error_message(None, error, us_in=us_in, testnet=self.options.testnet)
            )
            return
        # Answered at once when nothing has to be awaited (as the exchange's gateway answers
        # without a queue of its own); an asynchronous method or an injected delay goes on in
        # a task of the session.
        answer = self.answer_now(session, request, us_in)
        if asyncio.iscoroutine(answer):
            session.spawn(self._deliver_later(session, answer))
        else:
            self._deliver(session, answer)

    async def _deliver_later(self, session: Session, answer: Any) -> None:
        self._deliver(session, await answer)

    def _deliver(self, session: Session, answer: Any) -> None:
        if answer is not NO_ANSWER and not session.closed:
            self._send_answer(session, answer)
            if session.drop_after_answer:
                session.drop_when_written()

    def _send_answer(self, session: Session, answer: dict[str, Any]) -> None:
        if self.faults.frozen:
            return
        session.send(answer)
        if self.faults.count_answer():
            session.drop_when_written()

    async def _end_session(self, session: Session) -> None:
        session.closed = True
        self.sessions.discard(session)
        self.stop_heartbeat(session)
        for task in list(session.tasks):
            task.cancel()
        session.stop_writing()
        if session.cancel_on_disconnect and not session.logged_out:
            self.market.cancel_on_disconnect(session.order_ids)

    def close_gracefully(self, session: Session) -> None:
        async def close() -> None:
            await asyncio.sleep(0)
            if session.ws is not None:
                await session.ws.close()

        session.spawn(close())

    def drop_all(self) -> None:
        """Cut every open WebSocket, as a network failure would. Callable from any thread."""

        def drop() -> None:
            for session in list(self.sessions):
                session.drop()

        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop or self._loop is None:
            drop()
        else:
            self._loop.call_soon_threadsafe(drop)

    # -- HTTP ----------------------------------------------------------------------------------
    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        return await http.handle_http(self, request)

    # -- one request, either transport -----------------------------------------------------------
    async def answer(
        self,
        session: Session,
        request: Any,
        us_in: int,
        *,
        from_query: bool = False,
        http_token: str | bool | None = None,
    ) -> Any:
        """The answer message for ``request``, or ``NO_ANSWER`` (frozen, dropped, logout)."""
        answer = self.answer_now(
            session, request, us_in, from_query=from_query, http_token=http_token
        )
        if asyncio.iscoroutine(answer):
            answer = await answer
        return answer

    def answer_now(
        self,
        session: Session,
        request: Any,
        us_in: int,
        *,
        from_query: bool = False,
        http_token: str | bool | None = None,
    ) -> Any:
        """``answer`` without waiting where nothing has to be awaited: the message or
        ``NO_ANSWER``; else a coroutine that gives one (an asynchronous method, a delay)."""
        request_id = None
        method = ""
        if self.faults.frozen:
            return NO_ANSWER
        try:
            if isinstance(request, list):
                raise RpcError(INVALID_REQUEST, data={"reason": "batch requests are not supported"})
            if not isinstance(request, dict):
                raise RpcError(INVALID_REQUEST, data={"reason": "request must be an object"})
            request_id = request.get("id")
            if request_id is not None and (
                isinstance(request_id, bool) or not isinstance(request_id, int | str | Decimal)
            ):
                request_id = None
                raise RpcError(INVALID_REQUEST, data={"reason": "invalid id", "param": "id"})
            method = request.get("method")  # type: ignore[assignment]
            if not isinstance(method, str) or not method:
                method = ""
                raise RpcError(INVALID_REQUEST, data={"reason": "method is required"})
            raw_params = request.get("params")
            if raw_params is None:
                raw_params = {}
            if not isinstance(raw_params, dict):
                raise RpcError(INVALID_REQUEST, data={"reason": "params must be an object"})
            spec = METHODS.get(method)
            if spec is None:
                raise RpcError(METHOD_NOT_FOUND)
            if spec.websocket_only and not session.is_websocket:
                raise RpcError(MUST_BE_WEBSOCKET)
            if self.limits is not None and not self.limits.allow(
                matching_engine=spec.matching_engine
            ):
                session.drop_after_answer = True  # Deribit terminates the session
                raise RpcError(TOO_MANY_REQUESTS)
            raw_params = dict(raw_params)
            access_token = raw_params.pop("access_token", None)
            if spec.is_private:
                if self.faults.maintenance:
                    raise RpcError(SYSTEM_MAINTENANCE)
                if not self._authorised(session, access_token, http_token):
                    raise unauthorized()
            if method == "public/test" and self.faults.heartbeats_silent:
                return NO_ANSWER
            failure = self.faults.take_failure(method)
            if failure is not None:
                raise failure
            if self.faults.take_drop(method, raw_params, "before"):
                session.drop()
                return NO_ANSWER
            call = Call(self, session, method, Params(raw_params, from_query=from_query), us_in)
            self.market.sync_clock()
            result = spec.handler(call)
            if inspect.isawaitable(result):
                return self._answer_later(session, request_id, method, raw_params, us_in, result)
            message = self._answered(session, request_id, method, raw_params, us_in, result)
        except Exception as exc:  # the server never dies on bad input
            message = self._failed(request_id, method, exc, us_in)
        return self._as_sent(request_id, method, message)

    async def _answer_later(
        self,
        session: Session,
        request_id: Any,
        method: str,
        raw_params: dict[str, Any],
        us_in: int,
        result: Any,
    ) -> Any:
        try:
            result = await result
            message = self._answered(session, request_id, method, raw_params, us_in, result)
        except Exception as exc:
            message = self._failed(request_id, method, exc, us_in)
        answer = self._as_sent(request_id, method, message)
        if asyncio.iscoroutine(answer):
            answer = await answer
        return answer

    def _answered(
        self,
        session: Session,
        request_id: Any,
        method: str,
        raw_params: dict[str, Any],
        us_in: int,
        result: Any,
    ) -> Any:
        if result is NO_ANSWER:
            return NO_ANSWER
        if self.faults.take_drop(method, raw_params, "after"):
            session.drop()
            return NO_ANSWER
        return result_message(request_id, result, us_in=us_in, testnet=self.options.testnet)

    def _failed(self, request_id: Any, method: str, exc: Exception, us_in: int) -> dict[str, Any]:
        testnet = self.options.testnet
        if isinstance(exc, RpcError):
            return error_message(request_id, exc, us_in=us_in, testnet=testnet)
        if isinstance(exc, ExchangeError):
            error = RpcError(int(exc.code), exc.message, exc.data)
            return error_message(request_id, error, us_in=us_in, testnet=testnet)
        log.error("simulator failed on %s", method, exc_info=exc)
        error = RpcError(10001, "error", {"reason": f"{type(exc).__name__}: {exc}"})
        return error_message(request_id, error, us_in=us_in, testnet=testnet)

    def _as_sent(self, request_id: Any, method: str, message: Any) -> Any:
        """The message as it goes out: without an id if the request had none, after the delay
        the faults inject (a coroutine then), or NO_ANSWER if the server froze."""
        if message is NO_ANSWER:
            return NO_ANSWER
        if request_id is None:
            message.pop("id", None)
        delay = self.faults.delay_for(method)
        if delay:
            return self._delayed(message, delay)
        if self.faults.frozen:
            return NO_ANSWER
        return message

    async def _delayed(self, message: dict[str, Any], delay: float) -> Any:
        await asyncio.sleep(delay)
        return NO_ANSWER if self.faults.frozen else message

    def _authorised(
        self, session: Session, access_token: Any, http_token: str | bool | None
    ) -> bool:
        if isinstance(access_token, str):
            return self.tokens.check(access_token)
        if isinstance(http_token, bool):
            return http_token
        if isinstance(http_token, str):
            return self.tokens.check(http_token)
        return self.tokens.grant_is_valid(session.grant)

    def is_authorised(self, session: Session) -> bool:
        return self.tokens.grant_is_valid(session.grant)

    # -- heartbeats ----------------------------------------------------------------------------
    def start_heartbeat(self, session: Session, interval: float) -> None:
        self.stop_heartbeat(session)
        session.heartbeat_interval = interval
        session.test_request_pending = False
        self._heartbeats[session.id] = session.spawn(self._heartbeat_loop(session, interval))

    def stop_heartbeat(self, session: Session) -> None:
        session.heartbeat_interval = None
        session.test_request_pending = False
        task = self._heartbeats.pop(session.id, None)
        if task is not None:
            task.cancel()

    async def _heartbeat_loop(self, session: Session, interval: float) -> None:
        """Each interval: a ``test_request``; one left unanswered by the next tick closes the
        socket, as Deribit does."""
        while not session.closed:
            await asyncio.sleep(interval)
            if session.closed:
                return
            if self.faults.heartbeats_silent or self.faults.frozen:
                session.test_request_pending = False
                continue
            if session.test_request_pending:
                log.info("session %s missed a heartbeat test_request; closing", session.id)
                if session.ws is not None:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await session.ws.close()
                return
            session.test_request_pending = True
            session.send(heartbeat("test_request"))

    # -- notifications -------------------------------------------------------------------------
    def publish(self, payloads: Callable[[Channel], list[Any]]) -> None:
        """Send every subscribed session the messages ``payloads(channel)`` makes for each of
        its channels (computed once per channel name)."""
        if self.faults.frozen or not self.sessions:
            return
        made: dict[str, list[Any]] = {}
        for session in list(self.sessions):
            if session.closed or not session.subscriptions:
                continue
            for name, label in list(session.subscriptions.items()):
                if name not in made:
                    channel = self.channel(name)
                    made[name] = payloads(channel) if channel is not None else []
                for data in made[name]:
                    session.send(notification(name, data, label))

    def channel(self, name: str) -> Channel | None:
        if name not in self._channels:
            if len(self._channels) > 10_000:
                self._channels.clear()
            self._channels[name] = parse_channel(name, self.instrument_names())
        return self._channels[name]

    def after_subscribe(self, session: Session, channels: list[str]) -> None:
        """Push the current ticker / forming candle of new market channels, after the answer."""

        def push() -> None:
            if session.closed or self.faults.frozen:
                return
            for name in channels:
                channel = self.channel(name)
                if channel is not None and not channel.private and name in session.subscriptions:
                    for data in self.market.current(channel):
                        session.send(notification(name, data, session.subscriptions[name]))

        asyncio.get_running_loop().call_soon(push)

    # -- control ---------------------------------------------------------------------------------
    def set_price(self, instrument: str, price: Any, *, gap: bool = False) -> None:
        self.market.set_price(instrument, Decimal(str(price)), gap=gap)

    def state(self) -> dict[str, Any]:
        state = self.market.state()
        state["sessions"] = len(self.sessions)
        state["faults"] = self.faults.snapshot()
        return state

    def reset_engine(self) -> None:
        self.market.reset()
        self.tokens.revoke_all()

    # -- running ---------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
        """Listen on ``host:port`` (0 = a free port); returns the runner and the bound port."""
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, int(bound)
