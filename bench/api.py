"""API latency under load: 100 concurrent clients on ``GET /api/v2/strategy/status`` against a live
daphne (one process, PostgreSQL, Redis), with an active run. Prints p50 / p90 / p99 / max and the
throughput. The DRF user throttle is raised for the benchmark (API_RATE_USER), since 100 clients
from one token would otherwise measure the throttle.

    .venv/bin/python bench/api.py [--clients 100] [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp
from _stack import WEB_ENV, Stack, percentile


async def load(
    url: str, token: str, clients: int, total: int, warmup: int
) -> tuple[list[float], float, int]:
    headers = {"Authorization": f"Token {token}"}
    latencies: list[float] = []
    errors = 0
    remaining = total + warmup
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                measured = remaining < total
                started = time.perf_counter()
                async with session.get(f"{url}/api/v2/strategy/status") as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                if measured:
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    with Stack("api", extra_env={"API_RATE_USER": "10000000/min", **WEB_ENV}) as stack:
        from apps.strategies import services

        services.run_start(strategy="fast_test", params={}, instrument="BTC-PERPETUAL")
        stack.start_web()
        latencies, elapsed, errors = asyncio.run(
            load(stack.url, stack.token, args.clients, args.requests, args.warmup)
        )
    ms = [v * 1000 for v in latencies]
    print(f"API GET /api/v2/strategy/status, {args.clients} concurrent clients, {len(ms)} requests")
    print(
        f"  p50 {percentile(ms, 50):.1f} ms   p90 {percentile(ms, 90):.1f} ms   "
        f"p99 {percentile(ms, 99):.1f} ms   max {max(ms):.1f} ms"
    )
    print(f"  throughput {len(ms) / elapsed:.0f} req/s (incl. warm-up time), errors {errors}")
    print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
