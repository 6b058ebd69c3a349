"""DeribitBroker candles against the simulator replaying known candles: chart history and the
stream of closed candles from ``chart.trades``."""

from __future__ import annotations

import asyncio
import itertools
import time

from apps.brokers.base import Candle
from apps.brokers.deribit import DeribitBroker
from apps.brokers.simulator.testing import running_deribit_sim

MINUTE = 60_000


def _candles(count: int) -> list[Candle]:
    start = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE
    out = []
    for i in range(count):
        base = 30_000 + 10 * i
        out.append(Candle(start + i * MINUTE, base, base + 25, base - 15, base + 5, 1.0 + i))
    return out


async def test_history_and_closed_candles_match_the_replayed_data():
    source = _candles(40)
    async with running_deribit_sim(candles=source, history_candles=5, speed=600) as sim:
        broker = DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url)
        await broker.connect()
        try:
            now = int(time.time() * 1000)
            history = await broker.candles("BTC-PERPETUAL", 1, now - 10 * MINUTE, now - MINUTE)
            assert len(history) == 5
            assert [c.close for c in history] == [c.close for c in source[:5]]
            assert [c.high for c in history] == [c.high for c in source[:5]]
            ticks = [c.open_time_ms for c in history]
            assert all(b - a == MINUTE for a, b in itertools.pairwise(ticks))

            stream = broker.closed_candles("BTC-PERPETUAL", 1)
            closed = []
            async with asyncio.timeout(10):
                async for candle in stream:
                    closed.append(candle)
                    if len(closed) == 3:
                        break
            await stream.aclose()
            opens = [c.open_time_ms for c in closed]
            assert [b - a for a, b in itertools.pairwise(opens)] == [MINUTE, MINUTE]
            # Each closed candle is the whole candle, as the chart history has it.
            again = await broker.candles("BTC-PERPETUAL", 1, opens[0], opens[-1])
            assert [(c.open, c.high, c.low, c.close) for c in again] == [
                (c.open, c.high, c.low, c.close) for c in closed
            ]
            by_close = {c.close: c for c in source}
            for candle in closed:  # and it is one of the replayed candles, unchanged
                original = by_close[candle.close]
                assert (candle.open, candle.high, candle.low) == (
                    original.open,
                    original.high,
                    original.low,
                )
            (session,) = sim.server.sessions
            assert not any(c.startswith("chart.trades") for c in session.subscriptions)
        finally:
            await broker.disconnect()
