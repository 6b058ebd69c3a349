"""Start the Deribit simulator inside a test, and the pytest fixtures that do it.

In an async test (same event loop)::

    async with running_deribit_sim(balances={"BTC": Decimal("2")}) as sim:
        async with websockets.connect(sim.ws_url) as ws: ...
        sim.faults.reject_next_order(kind="stop", code=10009)
        sim.set_price("BTC-PERPETUAL", 25000)

From synchronous code (a Django test, a Celery worker under test), the server runs on its own
event loop in a background thread and every ``RunningSim`` method is marshalled onto it::

    with deribit_sim_thread() as sim: ...

Fixtures ``deribit_sim`` (async) and ``deribit_sim_threaded`` (sync) are defined here; register
them with ``pytest_plugins = ["apps.brokers.simulator.testing"]`` in the root conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
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
