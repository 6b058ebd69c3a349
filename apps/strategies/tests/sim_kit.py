"""Test kit for the runner against the Deribit simulator over a real socket (real DeribitClient).

The simulator runs in its own thread with the project's sample candles and no automatic replay:
``SimMarket.step()`` walks the next candle through every book, so a test decides when candles
close. The loop runs in the test's thread (same database transaction).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

from apps.brokers.deribit.broker import DeribitBroker
from apps.brokers.simulator.feed import SAMPLE_CANDLES, load_candles
from apps.brokers.simulator.testing import RunningSim
from apps.orders.gateway import BrokerGateway

SIM_OPTIONS = {"speed": None, "history_candles": 60}


def sim_options() -> dict:
    return {**SIM_OPTIONS, "candles": load_candles(SAMPLE_CANDLES)}


def deribit_gateway(
    sim: RunningSim, *, timeout: float = 2.0, auto_reconnect: bool = False
) -> BrokerGateway:
    broker = DeribitBroker(
        sim.client_id,
        sim.client_secret,
        url=sim.ws_url,
        request_timeout=timeout,
        order_timeout=timeout,
        heartbeat_interval=None,
        currencies=("BTC",),
        auto_reconnect=auto_reconnect,
        reconnect_base_delay=0.05,
        reconnect_max_delay=0.2,
    )
    return BrokerGateway(broker, timeout=max(30.0, timeout * 4))


def step(sim: RunningSim, n: int = 1) -> None:
    def run() -> None:
        market = sim.server.market
        for _ in range(n):
            market.step_candle(market.candles[market.replayed % len(market.candles)])
            market.replayed += 1

    sim.call(run)


def live_orders(sim: RunningSim) -> list:
    return sim.call(lambda: sim.engine.open_orders())


def position_size(sim: RunningSim, instrument: str = "BTC-PERPETUAL") -> Decimal:
    return sim.call(lambda: sim.engine.position(instrument).size)


def entries(sim: RunningSim) -> list:
    """Every entry order the exchange ever accepted (for duplicate checks)."""
    return [o for o in sim.call(lambda: sim.engine.all_orders()) if o.label.endswith("-entry")]


def unprotected(sim: RunningSim, instrument: str = "BTC-PERPETUAL") -> bool:
    """A position open without a live reduce-only stop of ours on the exchange."""
    size = position_size(sim, instrument)
    if size == 0:
        return False
    stops = [
        o
        for o in live_orders(sim)
        if o.instrument_name == instrument
        and o.order_type.startswith("stop")
        and o.reduce_only
        and (o.direction == "sell") == (size > 0)
    ]
    return not stops


def orphans(sim: RunningSim, instrument: str = "BTC-PERPETUAL") -> list:
    """Live stops/targets of ours while no position is open and no entry is live."""
    orders = live_orders(sim)
    if position_size(sim, instrument) != 0 or any(o.label.endswith("-entry") for o in orders):
        return []
    return [o for o in orders if o.label.endswith(("-sl", "-tp"))]


def chart_subscribed(sim: RunningSim) -> bool:
    """Whether some client listens to a candle channel (the loop's stream is up)."""

    def check() -> bool:
        return any(
            channel.startswith("chart.trades.")
            for session in sim.server.sessions
            for channel in session.subscriptions
        )

    return sim.call(check)


class SimDriver:
    """Steps the simulator's market from a thread until ``until()`` or ``limit`` steps."""

    def __init__(
        self,
        sim: RunningSim,
        stop: threading.Event,
        *,
        until: Callable[[], bool] = lambda: False,
        interval: float = 0.03,
        limit: int = 500,
        before_step: Callable[[int], None] | None = None,
        settle: float = 0.4,
        startup: float = 0.5,
    ) -> None:
        self.startup = startup
        self.sim = sim
        self.stop = stop
        self.until = until
        self.interval = interval
        self.limit = limit
        self.before_step = before_step
        self.settle = settle
        self.steps = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drive, daemon=True)

    def __enter__(self) -> SimDriver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=20)

    def _drive(self) -> None:
        try:
            # candles only matter once the loop listens (it subscribes after reconciling)
            deadline = time.monotonic() + max(self.startup, 15.0)
            while not self.stop.is_set() and not chart_subscribed(self.sim):
                if time.monotonic() > deadline:
                    break
                self.stop.wait(0.01)
            while not self.stop.is_set() and self.steps < self.limit:
                if self.until():
                    break
                if self.before_step:
                    self.before_step(self.steps)
                step(self.sim)
                self.steps += 1
                self.stop.wait(self.interval)
        except BaseException as exc:
            self.error = exc
        finally:
            self.stop.wait(self.settle)  # returns at once when the loop has ended already
            self.stop.set()
