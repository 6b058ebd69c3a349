"""Round-trip times of the native Deribit client against the Deribit simulator on loopback.

Starts the simulator itself in a child process (its own interpreter, so the figures are the
client's and the socket's, not two event loops sharing one thread), then measures, over N
requests each:
  - ``public/test``                      one JSON-RPC round trip
  - ``private/buy`` (resting limit)      one order placement
  - ``private/cancel``                   one cancel
  - ``otoco ack``                        the linked bracket request and its answer
  - ``place_bracket``                    the same plus reading its two legs (what the broker returns)

Usage: .venv/bin/python bench/deribit_client.py [-n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.brokers.base import BracketRequest, OrderRequest, Side  # noqa: E402
from apps.brokers.deribit import DeribitBroker, codec  # noqa: E402

INSTRUMENT = "BTC-PERPETUAL"
PRICE = Decimal("50000")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def serve(port: int) -> None:
    """The child process: the simulator on ``port``, no candle replay, until killed."""
    from apps.brokers.simulator.deribit_server import DeribitSimServer, SimOptions

    server = DeribitSimServer(SimOptions(speed=None))
    await server.start("127.0.0.1", port)
    server.set_price(INSTRUMENT, PRICE)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def measure(url: str, n: int) -> dict[str, list[float]]:
    """Each round does every measurement once, so load from other processes on the machine
    spreads evenly over them."""
    broker = DeribitBroker("paper", "paper", url=url, heartbeat_interval=None)
    await broker.connect()
    client = broker.client
    timings: dict[str, list[float]] = {
        "public/test": [],
        "private/buy": [],
        "private/cancel": [],
        "otoco ack": [],
        "place_bracket": [],
    }
    for _ in range(50):  # warm-up
        await client.call("public/test")
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        await client.call("public/test")
        timings["public/test"].append(clock() - start)

        order_request = OrderRequest(
            instrument=INSTRUMENT,
            side=Side.BUY,
            amount=Decimal("10"),
            order_type="limit",
            price=PRICE / 2,
            label=f"bench-{i}",
        )
        start = clock()
        order = await broker.place_order(order_request)
        placed = clock()
        await broker.cancel(order.order_id)
        timings["private/buy"].append(placed - start)
        timings["private/cancel"].append(clock() - placed)

        for name in ("otoco ack", "place_bracket"):
            request = BracketRequest(
                bracket_id=f"{name[0]}{i}",
                instrument=INSTRUMENT,
                side=Side.BUY,
                amount=Decimal("10"),
                stop_price=PRICE / 4,
                take_profit_price=PRICE,
                entry_type="limit",
                entry_price=PRICE / 2,
            )
            start = clock()
            if name == "otoco ack":  # the exchange's answer to the one linked request
                method, params = codec.bracket_params(request)
                result = await client.call(method, params)
                entry_id = result["order"]["order_id"]
            else:  # the broker's full placement: the request plus reading both legs
                entry_id = (await broker.place_bracket(request)).entry.order_id
            timings[name].append(clock() - start)
            await broker.cancel(entry_id)  # takes its legs with it
    await broker.disconnect()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="requests per measurement")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the simulator did not start")
        timings = asyncio.run(measure(f"ws://127.0.0.1:{port}/ws/api/v2", args.n))
    finally:
        child.terminate()
        child.wait(timeout=10)
    print(f"Deribit client round trips over loopback, simulator in a child process, n={args.n}")
    print(f"{'request':<16} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in timings.items():
        ms = [v * 1000 for v in values]
        print(f"{name:<16} {percentile(ms, 50):8.3f} {percentile(ms, 99):8.3f} {max(ms):8.3f}")


if __name__ == "__main__":
    main()
