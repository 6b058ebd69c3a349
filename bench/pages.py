"""Live-page fan-out: N open pages (real WebSockets on daphne, default 200) and the time until every
one of them has received a state change, from the moment the trader's request is sent.

Each round starts or stops a run through the API (``POST /api/v2/strategy/start|stop``); the run
transition is saved, then pushed (htmx fragment over the Channels group) to every open page. The
latency of one page in one round is: fragment received − request sent. Prints p50 / p99 / max
over pages × rounds. Target: p99 ≤ 250 ms for 200 pages.

    .venv/bin/python bench/pages.py [--pages 200] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp
from _stack import WEB_ENV, Stack, percentile


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[tuple[float, str]] = []

    async def read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.received.append((time.perf_counter(), message.data))

    def first(self, marker: str, since: float) -> float | None:
        for at, text in self.received:
            if at >= since and marker in text:
                return at
        return None


async def bench(stack: Stack, cookie: str, pages: int, rounds: int) -> dict:
    origin = stack.url
    api = {"Authorization": f"Token {stack.token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for _ in range(pages):
            ws = await session.ws_connect(
                f"ws://127.0.0.1:{stack.port}/ws/live/",
                headers={"Cookie": cookie, "Origin": origin},
                max_msg_size=0,
            )
            sockets.append(Page(ws))
        readers = [asyncio.create_task(page.read()) for page in sockets]
        await asyncio.sleep(1.0)  # initial state delivered
        latencies: list[float] = []
        answered: list[float] = []
        missed = 0
        for round_no in range(rounds):
            action = "start" if round_no % 2 == 0 else "stop"
            body = '{"strategy": "fast_test", "params": {}, "instrument": "BTC-PERPETUAL"}'
            sent = time.perf_counter()
            async with session.post(
                f"{stack.url}/api/v2/strategy/{action}",
                data=body if action == "start" else "{}",
                headers=api,
            ) as response:
                data = await response.json()
                assert response.status in (200, 201), (response.status, data)
            answered.append(time.perf_counter() - sent)
            run_id = data["run"]["id"]
            marker = f"Run {run_id} {'started' if action == 'start' else 'stopped'}"
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:
                if all(page.first(marker, sent) for page in sockets):
                    break
                await asyncio.sleep(0.01)
            for page in sockets:
                at = page.first(marker, sent)
                if at is None:
                    missed += 1
                else:
                    latencies.append(at - sent)
            await asyncio.sleep(0.3)
        # Fan-out alone: a state fragment pushed the way the loop pushes it after saving a transition.
        from apps.monitoring.live import alive_push

        fanout: list[float] = []
        for round_no in range(rounds):
            marker = f"bench-state-{round_no}"
            sent = time.perf_counter()
            await alive_push(f'<div id="run-state" hx-swap-oob="true">{marker}</div>')
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:
                if all(page.first(marker, sent) for page in sockets):
                    break
                await asyncio.sleep(0.005)
            for page in sockets:
                at = page.first(marker, sent)
                if at is None:
                    missed += 1
                else:
                    fanout.append(at - sent)
            await asyncio.sleep(0.2)
        for page in sockets:
            await page.ws.close()
        for reader in readers:
            reader.cancel()
    return {"pages": latencies, "api": answered, "fanout": fanout, "missed": missed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    env = {"WS_CONNECT_RATE": "100000/min", "WS_MAX_SOCKETS_PER_USER": "100000", **WEB_ENV}
    with Stack("pages", extra_env=env) as stack:
        stack.start_web()
        cookie = stack.session_cookie()
        result = asyncio.run(bench(stack, cookie, args.pages, args.rounds))
    ms = [v * 1000 for v in result["pages"]]
    missed = result["missed"]
    print(f"Live pages: {args.pages} open WebSockets, {args.rounds} state changes (run start/stop)")
    print(
        f"  time until each page has the change: p50 {percentile(ms, 50):.1f} ms   "
        f"p99 {percentile(ms, 99):.1f} ms   max {max(ms):.1f} ms   (missed {missed})"
    )
    api = [v * 1000 for v in result["api"]]
    fan = [v * 1000 for v in result["fanout"]]
    print(
        f"  (the API request itself answered in p50 {percentile(api, 50):.1f} ms, max {max(api):.1f} ms)"
    )
    print(
        f"  fan-out alone (push after the save → every page): p50 {percentile(fan, 50):.1f} ms   "
        f"p99 {percentile(fan, 99):.1f} ms   max {max(fan):.1f} ms"
    )
    print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
