"""Candle close → linked bracket acknowledged: the runner's reaction time, over loopback.

The Deribit simulator runs in a child process (its own interpreter), replaying the project's
sample candles fast (``--speed``: 600 = a one-minute candle every 0.1 s). The strategy loop runs in
this process exactly as in the worker (``run_loop_forever``: lock, transitions, the default
position poll, the entry context gathered while waiting (pre-flight orphan and position checks,
equity; see apps/strategies/runner/entry.py) and the bracket's intent armed ahead
(apps/orders/armed.py); at the close no database read: the lock check that fires the armed
intent, refused if a run or the risk settings changed since they were read
(apps/strategies/control.py), ONE OTOCO request with the real DeribitClient, then the outcome
rows and the run's moves) with the ``fast_test`` strategy (a signal on every closed
candle when flat; tiny stop/target so positions close within a candle or two).

Measured per bracket: from the moment the closed candle's chart message reached the loop's inbox
to the moment the exchange's answer to the OTOCO request arrived (``BracketResult.acked_at``; the
legs are read back and the rows written after that, outside the figure). The same values feed the
Prometheus histogram ``tradebaas_candle_to_bracket_seconds`` (``metrics.CANDLE_TO_BRACKET``), whose
count is printed too.

``--no-page-push`` disconnects the page's post_save pushers (apps/web/live.py: after each commit a
thread of this process sets a Redis flag and queues a render on the default worker, which this
bench does not run); the difference is their cost to the loop.

Needs PostgreSQL and Redis (see bench/_stack.py). Usage:
    .venv/bin/python bench/latency.py [-n 200] [--speed 600] [--no-page-push]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import Stack, free_port, percentile  # noqa: E402

SAMPLE = ROOT / "apps/brokers/simulator/sample_data/btcusdt-1m-sample.csv"


async def serve(port: int, speed: float) -> None:
    """The child process: the simulator replaying the sample candles at ``speed``."""
    from apps.brokers.simulator.deribit_server import DeribitSimServer, SimOptions

    server = DeribitSimServer(SimOptions(speed=speed, data_path=str(SAMPLE), history_candles=60))
    await server.start("127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="brackets to time")
    parser.add_argument("--speed", type=float, default=600.0)
    parser.add_argument(
        "--no-page-push",
        action="store_true",
        help="disconnect apps.web.live's post_save page pushers (shows the runner's own cost)",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebaas.settings.base")
        asyncio.run(serve(args.serve, args.speed))
        return
    port = free_port()
    with Stack("latency", extra_env={"LOG_LEVEL": "WARNING"}) as stack:
        sim = stack.start(
            "sim", [sys.executable, __file__, "--serve", str(port), "--speed", str(args.speed)]
        )
        deadline = time.monotonic() + 60
        while b"ready" not in Path(sim.log_path).read_bytes():  # type: ignore[attr-defined]
            if time.monotonic() > deadline or sim.poll() is not None:
                raise SystemExit(Path(sim.log_path).read_text())  # type: ignore[attr-defined]
            time.sleep(0.1)
        if args.no_page_push:
            _disconnect_page_push()
        samples = run(port, args.n, args.speed)
    report(samples, args)


def _disconnect_page_push() -> None:
    from django.db.models.signals import post_save

    from apps.brokers.models import BrokerAccount
    from apps.orders.models import Bracket, Order, Trade
    from apps.strategies.models import RunTransition, StrategyRun

    for model in (StrategyRun, RunTransition, Bracket, Order, Trade, BrokerAccount):
        post_save.disconnect(sender=model, dispatch_uid=f"web-live-{model.__name__}")


def run(port: int, n: int, speed: float) -> list[float]:
    from apps.brokers.deribit.broker import DeribitBroker
    from apps.monitoring import metrics
    from apps.orders.gateway import BrokerGateway
    from apps.strategies.models import StrategyRun
    from apps.strategies.runner.loop import run_loop_forever

    samples: list[float] = []
    observe = metrics.CANDLE_TO_BRACKET.observe

    def record(value: float) -> None:
        samples.append(value)
        observe(value)
        if len(samples) >= n:
            stop.set()

    metrics.CANDLE_TO_BRACKET.observe = record  # type: ignore[method-assign]
    from django.conf import settings

    settings.RUNNER_CANDLE_WAIT_S = 0.05
    run_row = StrategyRun.objects.create(
        strategy="fast_test",
        params={"first_side": "buy", "stop_loss_pct": 0.15, "take_profit_pct": 0.15},
        instrument="BTC-PERPETUAL",
    )
    stop = threading.Event()

    def gateway(_run) -> BrokerGateway:
        return BrokerGateway(
            DeribitBroker(
                "paper",
                "paper",
                url=f"ws://127.0.0.1:{port}/ws/api/v2",
                heartbeat_interval=None,
                currencies=("BTC",),
            )
        )

    # a trade takes a few candles (entry, exit, the next close): room for five each
    limit = 60.0 + n * 5 * 60.0 / speed
    outcome = run_loop_forever(run_row.id, gateway_factory=gateway, stop=stop, max_seconds=limit)
    run_row.refresh_from_db()
    if len(samples) < n:
        print(f"loop ended early ({outcome}, run {run_row.state} {run_row.error_message})")
    return samples


def report(samples: list[float], args: argparse.Namespace) -> None:
    from apps.monitoring import metrics

    ms = [s * 1000 for s in samples]
    if not ms:
        raise SystemExit("no bracket was timed")
    count = next(
        (
            m.value
            for m in metrics.CANDLE_TO_BRACKET.collect()[0].samples
            if m.name.endswith("_count")
        ),
        0,
    )
    push = "off (--no-page-push)" if args.no_page_push else "on (as deployed)"
    print(
        "candle close -> linked bracket acknowledged, loopback Deribit simulator, "
        f"speed {args.speed:g}x, page push {push}"
    )
    print(f"  brackets timed      {len(ms)}")
    print(f"  p50                 {percentile(ms, 50):.2f} ms")
    print(f"  p90                 {percentile(ms, 90):.2f} ms")
    print(f"  p99                 {percentile(ms, 99):.2f} ms")
    print(f"  max                 {max(ms):.2f} ms")
    print(f"  histogram count     {int(count)} (tradebaas_candle_to_bracket_seconds)")
    print("  targets             p50 <= 2 ms, p99 <= 10 ms")


if __name__ == "__main__":
    main()
