"""Candle loading and replay: the CSV loader's errors, speeds, loops and the intra-candle path."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from apps.brokers.base import Candle
from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.feed import (
    SAMPLE_CANDLES,
    CandleFeed,
    load_candle_arrays,
    load_candles,
    parse_speed,
    parse_time_ms,
)

BTC = "BTC-PERPETUAL"
ETH = "ETH-PERPETUAL"
HEADER = "open_time,open,high,low,close,volume\n"


def write(tmp_path, text: str):
    path = tmp_path / "candles.csv"
    path.write_text(text)
    return path


def test_the_shipped_sample_loads():
    candles = load_candles(SAMPLE_CANDLES)
    assert len(candles) == 2_880
    assert candles[0] == Candle(1_678_406_400_000, 20370.23, 20374.49, 20360.61, 20360.61, 0.07044)
    assert all(b.open_time_ms - a.open_time_ms == 60_000 for a, b in itertools.pairwise(candles))
    arrays = load_candle_arrays(SAMPLE_CANDLES)
    assert len(arrays) == 2_880 and arrays.candle(5) == candles[5]


def test_times_in_iso_unix_seconds_and_milliseconds():
    assert parse_time_ms("2023-03-01 00:00:00+00:00") == 1_677_628_800_000
    assert parse_time_ms("2023-03-01T01:00:00+01:00") == 1_677_628_800_000
    assert parse_time_ms("2023-03-01T00:00:00Z") == 1_677_628_800_000
    assert parse_time_ms("1677628800") == 1_677_628_800_000
    assert parse_time_ms("1677628800000") == 1_677_628_800_000
    with pytest.raises(ValueError, match="UTC offset"):
        parse_time_ms("2023-03-01 00:00:00")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("open_time,open,high,low\n", r":1: missing column\(s\) close"),
        (
            HEADER + "1677628800,1,2,0.5,1.5,1\n1677628860,1,x,0.5,1.5,1\n",
            r":3: high is not a number",
        ),
        (
            HEADER + "1677628800,1,2,0.5,1.5,1\n1677628800,1,2,0.5,1.5,1\n",
            r":3: open_time does not",
        ),
        (HEADER + "1677628800,1,0.9,0.5,1.5,1\n", r":2: high/low do not contain"),
        (HEADER + "yesterday,1,2,0.5,1.5,1\n", r":2: not a time"),
        (HEADER + "1677628800,1,2\n", r":2: wrong number of fields"),
        (HEADER, r"no candles"),
    ],
)
def test_a_bad_file_names_the_line(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(ValueError, match=message) as info:
        load_candles(path)
    assert str(path) in str(info.value)


def test_parse_speed():
    assert parse_speed("max") == float("inf")
    assert parse_speed("realtime") == 1.0
    assert parse_speed("60x") == parse_speed("60") == parse_speed(60) == 60.0
    with pytest.raises(ValueError):
        parse_speed(0)


def candles(count: int, start: float = 100.0) -> list[Candle]:
    return [
        Candle(i * 60_000, start + i, start + i + 2, start + i - 1, start + i + 1)
        for i in range(count)
    ]


def test_step_replays_on_every_instrument_with_its_scale_and_reports_closed_candles():
    engine = ExchangeEngine(now_ms=0)
    feed = CandleFeed(engine, candles(3, 20_000), {BTC: 1.0, ETH: 0.1})
    seen = []
    feed.on_close.append(seen.append)
    closed = feed.step(2)
    assert [(c.instrument, c.candle.open_time_ms) for c in closed] == [
        (BTC, 0),
        (ETH, 0),
        (BTC, 60_000),
        (ETH, 60_000),
    ]
    assert closed[1].candle.close == pytest.approx(2_000.1)
    assert seen == closed
    assert engine.last_price(BTC) == 20_002 and engine.last_price(ETH) == pytest.approx(2_000.2)
    assert engine.now_ms == 60_000 + 59_999
    rest = feed.step(5)  # only one candle is left
    assert [c.candle.open_time_ms for c in rest] == [120_000, 120_000]
    assert feed.exhausted and feed.step(1) == []


def test_a_looping_feed_starts_again_with_later_times():
    engine = ExchangeEngine(now_ms=0)
    feed = CandleFeed(engine, candles(2, 20_000), [BTC], loop=True)
    times = [c.candle.open_time_ms for c in feed.step(5)]
    assert times == [0, 60_000, 120_000, 180_000, 240_000]
    assert not feed.exhausted and feed.rounds == 2


def test_a_stop_inside_a_replayed_candle_fills_on_its_path():
    engine = ExchangeEngine(prices={BTC: 20_000}, now_ms=0)
    engine.buy(BTC, 100, type="market")
    engine.sell(BTC, 100, type="stop_market", trigger_price=19_990, trigger="last_price")
    CandleFeed(engine, [Candle(60_000, 20_000, 20_010, 19_980, 20_005)], [BTC]).run()
    assert engine.position(BTC).size == 0
    # the high (10 away) is nearer than the low (20): the low is the 2nd extreme, reached at 2/3
    assert engine.trades()[-1].timestamp == 60_000 + 40_000


async def test_async_replay_as_fast_as_possible_yields_every_closed_candle():
    engine = ExchangeEngine(now_ms=0)
    feed = CandleFeed(engine, candles(50, 20_000), [BTC], speed="max")
    got = [closed.candle.open_time_ms async for closed in feed]
    assert got == [i * 60_000 for i in range(50)]


async def test_async_replay_is_paced_by_the_speed_and_reports_the_forming_candle():
    engine = ExchangeEngine(now_ms=0)
    # 3000× : a one-minute candle lasts 20 ms
    feed = CandleFeed(engine, candles(4, 20_000), [BTC], speed=3000)
    ticks = []
    feed.on_tick.append(lambda name, forming: ticks.append(forming))
    started = time.perf_counter()
    got = [closed async for closed in feed]
    elapsed = time.perf_counter() - started
    assert len(got) == 4
    assert elapsed >= 0.06  # the 4th candle closes 3 × 20 ms + 20 ms after the start
    assert len(ticks) == 16
    first = ticks[:4]
    assert [t.close for t in first] == [20_000, 19_999, 20_002, 20_001]  # open, low, high, close
    assert first[1].low == 19_999 and first[1].high == 20_000


async def test_stop_ends_the_async_replay():
    engine = ExchangeEngine(now_ms=0)
    feed = CandleFeed(engine, candles(10, 20_000), [BTC], speed="max", loop=True)
    count = 0
    async for _ in feed:
        count += 1
        if count == 3:
            feed.stop()
    assert count == 3
    await asyncio.sleep(0)


def test_numpy_loader_equals_the_row_loader_and_falls_back_for_errors(tmp_path):
    import numpy as np

    from apps.brokers.simulator.feed import CandleArrays

    fast = load_candle_arrays(SAMPLE_CANDLES)
    slow = CandleArrays.from_candles(load_candles(SAMPLE_CANDLES))
    for column in ("times", "opens", "highs", "lows", "closes", "volumes"):
        assert np.array_equal(getattr(fast, column), getattr(slow, column)), column
    seconds = write(tmp_path, HEADER + "1677628800,1,2,0.5,1.5,1\n1677628860,1.5,2,1,1.2,2\n")
    assert list(load_candle_arrays(seconds).times) == [1_677_628_800_000, 1_677_628_860_000]
    offsets = tmp_path / "offsets.csv"
    offsets.write_text(HEADER + "2023-03-01T01:00:00+01:00,1,2,0.5,1.5,1\n")
    assert list(load_candle_arrays(offsets).times) == [1_677_628_800_000]
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "1677628800,1,2,0.5,1.5,1\n1677628860,1,0.9,0.5,1.5,1\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: high/low do not contain"):
        load_candle_arrays(bad)
