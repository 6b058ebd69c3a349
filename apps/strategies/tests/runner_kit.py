"""Test kit for the runner: a manual PaperBroker behind a gateway, a market driver thread, runs.

The loop runs in the test's own thread (so it shares the test's database transaction); a driver
thread moves the paper market by stepping candles on the broker's loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

from apps.brokers.paper import PaperBroker
from apps.orders.gateway import BrokerGateway
from apps.strategies.models import RunState, StrategyRun


def paper_gateway(*, linked: bool = True, warmup: int = 30, **kwargs) -> BrokerGateway:
    broker = PaperBroker(manual=True, warmup=warmup, speed="max", **kwargs)
    if not linked:
        broker.supports_linked_orders = False
    return BrokerGateway(broker)


def make_run(
    *, strategy: str = "fast_test", params: dict | None = None, state: str = RunState.IDLE
) -> StrategyRun:
    from apps.strategies.registry import get_strategy

    clean = get_strategy(strategy, params or {}).params
    return StrategyRun.objects.create(
        strategy=strategy, params=clean, instrument="BTC-PERPETUAL", state=state
    )


class Driver:
    """Steps the paper market every ``interval`` seconds until ``until(engine)`` or ``limit``."""

    def __init__(
        self,
        gateway: BrokerGateway,
        stop: threading.Event,
        *,
        until: Callable[[object], bool],
        interval: float = 0.02,
        limit: int = 2000,
        before_step: Callable[[int], None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.stop = stop
        self.until = until
        self.interval = interval
        self.limit = limit
        self.before_step = before_step
        self.steps = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drive, daemon=True)

    def __enter__(self) -> Driver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _drive(self) -> None:
        try:
            # candles only matter once the loop listens (it subscribes after reconciling)
            deadline = time.monotonic() + 15
            while not self.stop.is_set() and time.monotonic() < deadline:
                if self.gateway.on_loop(lambda: bool(self.gateway.broker._candle_queues)):
                    break
                time.sleep(0.01)
            while not self.stop.is_set() and self.steps < self.limit:
                engine = self.gateway.broker.engine
                if self.gateway.on_loop(lambda: self.until(engine)):
                    break
                if self.before_step:
                    self.before_step(self.steps)
                self.gateway.run(self.gateway.broker.step(1))
                self.steps += 1
                time.sleep(self.interval)
        except BaseException as exc:  # surfaced by the test
            if self.gateway.loop.is_running():  # else the run ended and closed its gateway
                self.error = exc
        finally:
            time.sleep(0.3)  # let the loop record what the last step did
            self.stop.set()


def first_entry(engine) -> bool:
    return any(t.label.endswith("-entry") for t in engine.trades())


def run_driven(
    gateway: BrokerGateway,
    before_first_candle: Callable[[], None],
    *,
    until: Callable[[object], bool] = first_entry,
    limit: int = 20,
) -> str:
    """A fresh run's loop, in this thread, on a market the driver steps until ``until`` (by
    default: our first entry filled) or ``limit``; ``before_first_candle`` runs in the driver's
    thread before its first step. Returns why the loop ended."""
    from apps.strategies.runner.loop import run_loop_forever

    run = make_run()
    stop = threading.Event()
    with Driver(
        gateway,
        stop,
        until=until,
        before_step=lambda step: before_first_candle() if step == 0 else None,
        limit=limit,
    ) as driver:
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30
        )
    assert driver.error is None
    return outcome


def positions(gateway: BrokerGateway) -> list:
    """Open positions, read from the engine (works after the loop closed the gateway)."""
    return [p for p in gateway.broker.engine.positions() if p.size != 0]


def open_orders(gateway: BrokerGateway) -> list:
    return list(gateway.broker.engine.open_orders())


def fills_count(engine) -> int:
    return len(engine.user_trades()) if hasattr(engine, "user_trades") else 0


ZERO = Decimal("0")


def start_concurrently(token: str, n: int = 100) -> list[int]:
    """``n`` threads POST /api/v2/strategy/start at the same instant; their status codes.

    A request refused at connect by PostgreSQL's connection limit (shared with whatever else runs
    on the machine) executed nothing, so it is sent again; any other failure is reported.
    """
    import threading

    from django.db import OperationalError, connection
    from rest_framework.test import APIClient

    statuses: list[int] = []
    barrier = threading.Barrier(n)

    def one() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        barrier.wait()
        try:
            for _ in range(400):
                try:
                    response = client.post(
                        "/api/v2/strategy/start",
                        {"strategy": "fast_test", "instrument": "BTC-PERPETUAL"},
                        format="json",
                    )
                except OperationalError as exc:
                    # refused at connect (no connection was ever made): nothing was executed
                    if connection.connection is None and "connection failed" in str(exc):
                        connection.close()
                        time.sleep(0.02)
                        continue
                    statuses.append(f"{type(exc).__name__}: {exc}")
                    return
                statuses.append(response.status_code)
                return
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses
