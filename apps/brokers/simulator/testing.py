"""Start the Deribit simulator inside a test, and the pytest fixtures that do it.

In an async test (same event loop)::

    async with running_deribit_sim(balances={"BTC": Decimal("2")}) as sim:
        async with websockets.connect(sim.ws_url) as ws: ...
        sim.faults.reject_next_order(kind="stop", code=10009)
        sim.set_price("BTC-PERPETUAL", 25000)

From synchronous code (a Django test, a Celery worker under test), the server runs on its own
event loop in a background thread and every ``RunningSim`` method is marshalled onto it::

    with deribit_sim_thread() as sim: ...

A simulator in another process (``manage.py deribit_sim``) is steered over HTTP with the same
verbs::

    control = SimControl("http://127.0.0.1:8765")
    control.drop_on_next_order(when="after", kind="primary")

Fixtures ``deribit_sim`` (async) and ``deribit_sim_threaded`` (sync) are defined here; register
them with ``pytest_plugins = ["apps.brokers.simulator.testing"]`` in the root conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from apps.brokers.simulator.control import Faults
from apps.brokers.simulator.deribit_server import DeribitSimServer, SimOptions

T = TypeVar("T")

# Test defaults: no candle replay (prices move only when a test moves them) and heartbeat
# intervals down to 50 ms so heartbeat tests take milliseconds, not tens of seconds.
TEST_DEFAULTS: dict[str, Any] = {"speed": None, "min_heartbeat_interval": 0.05}


@dataclass
class RunningSim:
    """A live simulator. ``faults`` is the fault switchboard (see ``control.Faults``)."""

    server: DeribitSimServer
    host: str
    port: int
    loop: asyncio.AbstractEventLoop
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/api/v2"

    @property
    def http_url(self) -> str:
        """Base URL; the API is under ``/api/v2/`` and the faults under ``/_sim/``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.http_url}/api/v2"

    @property
    def options(self) -> SimOptions:
        return self.server.options

    @property
    def client_id(self) -> str:
        return self.server.options.client_id

    @property
    def client_secret(self) -> str:
        return self.server.options.client_secret

    @property
    def engine(self) -> Any:
        return self.server.market.engine

    @property
    def faults(self) -> Faults:
        return self.server.faults

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the simulator's loop (directly when already on it) and return its value."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def set_price(
        self, instrument: str, price: Decimal | float | int | str, *, gap: bool = False
    ) -> None:
        """Move the price (last, mark and index) to ``price``: continuously (orders on the way
        fill at their own prices, in order) or, with ``gap=True``, as a jump (a stop crossed
        fills at ``price``). Ticker and chart subscribers are notified."""
        self.call(lambda: self.server.set_price(instrument, price, gap=gap))

    def step_candles(self, n: int = 1) -> int:
        """Walk the next ``n`` candles of the data (``candles=`` / ``data_path=`` with
        ``speed=None``) through every book now: subscribers see each point, stops and targets
        fire, the clock moves to each candle's end. Returns how many were walked."""
        return self.call(lambda: self.server.market.step(n))

    def drop_connections(self) -> None:
        """Cut every open WebSocket now (no close frame)."""
        self.call(self.server.drop_all)

    def state(self) -> dict[str, Any]:
        """The ``/_sim/state`` document: orders, positions, accounts, faults."""
        return self.call(self.server.state)

    def reset(self, *, engine: bool = False) -> None:
        """Clear every fault; with ``engine=True`` also a fresh account (orders, positions)."""

        def run() -> None:
            self.server.faults.reset()
            if engine:
                self.server.reset_engine()

        self.call(run)

    @property
    def session_count(self) -> int:
        return len(self.server.sessions)


class SimControl:
    """The ``/_sim/`` interface of a simulator in another process, as blocking calls.

    Each method mirrors ``control.Faults`` (and ``RunningSim`` for price, state and reset) and
    returns the server's answer (the fault table, or the state for ``set_price``).
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = urllib.request.Request(  # noqa: S310 - a loopback URL the test chose
            f"{self.base_url}/_sim/{path}",
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        return self._request("state")

    def faults(self) -> dict[str, Any]:
        return self._request("faults")

    def drop_now(self) -> Any:
        return self._request("drop", {})

    def drop_after(self, answers: int) -> Any:
        return self._request("drop", {"after_answers": answers})

    def drop_on_next_order(self, when: str = "before", kind: str = "any", count: int = 1) -> Any:
        return self._request("drop_on_order", {"when": when, "kind": kind, "count": count})

    def drop_on_next_request(self, method: str, when: str = "before", count: int = 1) -> Any:
        return self._request("drop_on_request", {"method": method, "when": when, "count": count})

    def reject_next_order(
        self, kind: str = "any", code: int = 10009, message: str | None = None, count: int = 1
    ) -> Any:
        body = {"kind": kind, "code": code, "message": message, "count": count}
        return self._request("reject", body)

    def fail_next_request(
        self, method: str, code: int = 10040, message: str | None = None, count: int = 1
    ) -> Any:
        body = {"method": method, "code": code, "message": message, "count": count}
        return self._request("fail", body)

    def delay(self, ms: float, methods: list[str] | None = None) -> Any:
        return self._request("delay", {"ms": ms, "methods": methods})

    def silence_heartbeats(self, silent: bool = True) -> Any:
        return self._request("heartbeats", {"answer": not silent})

    def freeze(self, frozen: bool = True) -> Any:
        return self._request("freeze", {"on": frozen})

    def set_maintenance(self, on: bool = True) -> Any:
        return self._request("maintenance", {"on": on})

    def set_price(self, instrument: str, price: Any, *, gap: bool = False) -> Any:
        return self._request("price", {"instrument": instrument, "price": price, "gap": gap})

    def reset(self, *, engine: bool = False) -> Any:
        return self._request("reset", {"engine": engine})


def _options(overrides: dict[str, Any]) -> SimOptions:
    values = {**TEST_DEFAULTS, **overrides}
    return SimOptions(**values)


@contextlib.asynccontextmanager
async def running_deribit_sim(**options: Any) -> AsyncIterator[RunningSim]:
    """Serve the simulator on a free loopback port of the running loop. ``options`` are
    ``SimOptions`` fields (client_id, client_secret, balances, speed, data_path, token_ttl,
    min_heartbeat_interval, testnet, ...)."""
    server = DeribitSimServer(_options(options))
    runner, port = await server.start("127.0.0.1", 0)
    try:
        yield RunningSim(server, "127.0.0.1", port, asyncio.get_running_loop())
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def deribit_sim_thread(**options: Any) -> Iterator[RunningSim]:
    """The same simulator on its own event loop in a daemon thread, for synchronous callers."""
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    async def start() -> None:
        server = DeribitSimServer(_options(options))
        started["server"] = server
        started["runner"], started["port"] = await server.start("127.0.0.1", 0)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # surface start failures in the caller
            started["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="deribit-sim", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if "error" in started:
        raise started["error"]
    sim = RunningSim(started["server"], "127.0.0.1", started["port"], loop, thread)
    try:
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(started["runner"].cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest_asyncio.fixture
async def deribit_sim() -> AsyncIterator[RunningSim]:
    """A simulator on the test's event loop, default options (credentials paper/paper)."""
    async with running_deribit_sim() as sim:
        yield sim


@pytest.fixture
def deribit_sim_threaded() -> Iterator[RunningSim]:
    """A simulator in a background thread, for synchronous tests."""
    with deribit_sim_thread() as sim:
        yield sim
