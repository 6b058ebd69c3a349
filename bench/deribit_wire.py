"""Requests per second the Deribit simulator answers over a real WebSocket on loopback.

One raw JSON-RPC client (the ``websockets`` package, no project client) talks to the simulator
running in the same process. Prints, for sequential round trips (send, wait for the answer):
  - ``public/get_time``         the protocol layer alone (envelope, dispatch, JSON)
  - ``private/buy`` + ``cancel``  a resting limit order placed and cancelled (engine included)
  - ``private/buy`` OTOCO         a market entry with its stop and target (then flattened)
and, pipelined (all sent, then all answers read), ``public/get_time`` throughput.

Usage: .venv/bin/python bench/deribit_wire.py [--count 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402

from apps.brokers.simulator.testing import running_deribit_sim  # noqa: E402

BTC = "BTC-PERPETUAL"


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        await self.ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
            )
        )
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]


async def timed(label: str, count: int, body) -> None:
    started = time.perf_counter()
    for index in range(count):
        await body(index)
    elapsed = time.perf_counter() - started
    print(f"{label:<34} {count / elapsed:>9,.0f} /s   ({elapsed * 1e6 / count:,.0f} µs each)")


async def main(count: int) -> None:
    async with (
        running_deribit_sim(balances={"BTC": 1000}) as sim,
        websockets.connect(sim.ws_url, max_size=2**24) as ws,
    ):
        client = Client(ws)
        await client.call(
            "public/auth",
            {
                "grant_type": "client_credentials",
                "client_id": "paper",
                "client_secret": "paper",
            },
        )
        await timed("public/get_time round trip", count, lambda i: client.call("public/get_time"))

        async def place_and_cancel(index: int) -> None:
            answer = await client.call(
                "private/buy",
                {
                    "instrument_name": BTC,
                    "amount": 10,
                    "type": "limit",
                    "price": 20000,
                    "label": f"b{index}",
                },
            )
            await client.call("private/cancel", {"order_id": answer["order"]["order_id"]})

        await timed("private/buy + private/cancel", count // 2, place_and_cancel)

        async def bracket(index: int) -> None:
            await client.call(
                "private/buy",
                {
                    "instrument_name": BTC,
                    "amount": 100,
                    "type": "market",
                    "label": f"tb-{index}-entry",
                    "linked_order_type": "one_triggers_one_cancels_other",
                    "otoco_config": [
                        {
                            "direction": "sell",
                            "type": "stop_market",
                            "trigger_price": 24000,
                            "trigger": "mark_price",
                            "reduce_only": True,
                        },
                        {
                            "direction": "sell",
                            "type": "take_limit",
                            "price": 26000,
                            "trigger_price": 26000,
                            "trigger": "mark_price",
                            "reduce_only": True,
                        },
                    ],
                },
            )
            await client.call("private/close_position", {"instrument_name": BTC, "type": "market"})
            await client.call("private/cancel_all")

        await timed("OTOCO bracket + close + cancel_all", count // 4, bracket)

        started = time.perf_counter()
        for index in range(count):
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": f"p{index}", "method": "public/get_time"})
            )
        for _ in range(count):
            await ws.recv()
        elapsed = time.perf_counter() - started
        print(f"{'public/get_time pipelined':<34} {count / elapsed:>9,.0f} /s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    asyncio.run(main(parser.parse_args().count))
