"""Candles in, prices out: load candle files and replay them through an engine.

``load_candles(path)`` reads the shared CSV format (``open_time,open,high,low,close,volume``;
``open_time`` ISO 8601 with a UTC offset, or unix seconds / milliseconds) and raises a
``ValueError`` naming the file and line of the first bad row. ``load_candle_arrays`` gives the same
data as numpy arrays for backtests.

``CandleFeed`` replays a candle series into an ``ExchangeEngine`` on one or more instruments
(each with a price scale, so one BTC file can drive the ETH books too). Each candle is walked
along the engine's intra-candle path (open → nearer extreme → farther extreme → close, see
``engine.intra_candle_path``); only after the close is the candle reported as closed, so a
runner decides on closed candles only. Speeds: ``"max"`` (as fast as possible), ``1`` (real time:
a one-minute candle lasts a minute) or any multiplier (``60`` → a minute per second).
Use ``step(n)`` / ``run()`` synchronously (backtests, tests) or ``async for closed in feed``
(live paper trading, the wire server).
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from apps.brokers.base import Candle

from .engine import intra_candle_path

if TYPE_CHECKING:
    import numpy as np

    from .engine import ExchangeEngine

REQUIRED_COLUMNS = ("open_time", "open", "high", "low", "close")
SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "sample_data"
SAMPLE_CANDLES = SAMPLE_DATA_DIR / "btcusdt-1m-sample.csv"


def parse_time_ms(value: str) -> int:
    """Milliseconds since the epoch from ISO 8601 (with offset) or unix seconds / milliseconds."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise ValueError(f"not a time: {value!r}")
        # below 1e11 it is seconds (1e11 s is the year 5138), above milliseconds
        return round(number * 1000) if abs(number) < 1e11 else round(number)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {value!r}")
    return round(moment.timestamp() * 1000)


def _candle_from_row(row: dict[str, str]) -> Candle:
    open_time_ms = parse_time_ms(row["open_time"] or "")
    values = []
    for column in ("open", "high", "low", "close"):
        text = row[column]
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{column} is not a number: {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{column} must be a positive number, not {text!r}")
        values.append(value)
    open_, high, low, close = values
    if high < max(open_, close, low) or low > min(open_, close):
        raise ValueError(f"high/low do not contain open/close: {open_}, {high}, {low}, {close}")
    volume_text = row.get("volume") or "0"
    try:
        volume = float(volume_text)
    except ValueError:
        raise ValueError(f"volume is not a number: {volume_text!r}") from None
    return Candle(open_time_ms, open_, high, low, close, volume)


def load_candles(path: str | Path) -> list[Candle]:
    """Every candle of a CSV file, in file order (times must increase).

    Raises ``ValueError("<path>:<line>: <what>")`` for a missing column, a bad number or time,
    a high/low that does not contain the open/close, or a time that does not increase.
    """
    path = Path(path)
    candles: list[Candle] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {', '.join(missing)}")
        reader.fieldnames = header
        previous = None
        for row in reader:
            line = reader.line_num
            if None in row or any(row.get(name) is None for name in REQUIRED_COLUMNS):
                raise ValueError(f"{path}:{line}: wrong number of fields")
            try:
                candle = _candle_from_row(row)
            except ValueError as error:
                raise ValueError(f"{path}:{line}: {error}") from None
            if previous is not None and candle.open_time_ms <= previous:
                raise ValueError(f"{path}:{line}: open_time does not increase")
            previous = candle.open_time_ms
            candles.append(candle)
    if not candles:
        raise ValueError(f"{path}: no candles")
    return candles


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """A candle series as numpy arrays (times int64 ms, prices and volume float64)."""

    times: np.ndarray
    opens: np.ndarray
    highs: np.ndarray
    lows: np.ndarray
    closes: np.ndarray
    volumes: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def from_candles(cls, candles: Sequence[Candle]) -> CandleArrays:
        import numpy as np

        return cls(
            times=np.fromiter(
                (c.open_time_ms for c in candles), dtype=np.int64, count=len(candles)
            ),
            opens=np.fromiter((c.open for c in candles), dtype=float, count=len(candles)),
            highs=np.fromiter((c.high for c in candles), dtype=float, count=len(candles)),
            lows=np.fromiter((c.low for c in candles), dtype=float, count=len(candles)),
            closes=np.fromiter((c.close for c in candles), dtype=float, count=len(candles)),
            volumes=np.fromiter((c.volume for c in candles), dtype=float, count=len(candles)),
        )

    def candle(self, index: int) -> Candle:
        return Candle(
            int(self.times[index]),
            float(self.opens[index]),
            float(self.highs[index]),
            float(self.lows[index]),
            float(self.closes[index]),
            float(self.volumes[index]),
        )


def load_candle_arrays(path: str | Path) -> CandleArrays:
    """``load_candles`` as numpy arrays, parsed by numpy when the file is clean.

    A file numpy cannot read in one go, or whose data breaks a rule, is read again by
    ``load_candles``, which raises the ``ValueError`` naming the bad line.
    """
    path = Path(path)
    try:
        arrays = _numpy_arrays(path)
    except (ValueError, IndexError):
        arrays = None
    if arrays is None:
        return CandleArrays.from_candles(load_candles(path))
    return arrays


def _numpy_arrays(path: Path) -> CandleArrays | None:
    import numpy as np

    with path.open(encoding="utf-8") as handle:
        header = [name.strip() for name in handle.readline().split(",")]
    if any(name not in header for name in REQUIRED_COLUMNS):
        return None
    columns = [header.index(name) for name in ("open", "high", "low", "close")]
    has_volume = "volume" in header
    if has_volume:
        columns.append(header.index("volume"))
    values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=columns, dtype=float, ndmin=2)
    raw_times = np.loadtxt(
        path, delimiter=",", skiprows=1, usecols=header.index("open_time"), dtype=str, ndmin=1
    )
    if not len(raw_times) or len(raw_times) != len(values):
        return None
    first = raw_times[0].strip()
    if first.replace(".", "", 1).isdigit():
        numbers = raw_times.astype(float)
        times = np.where(np.abs(numbers) < 1e11, numbers * 1000, numbers).round().astype(np.int64)
    else:
        if not all(text.endswith(("+00:00", "Z")) for text in raw_times):
            return None  # other offsets: the slow path converts them
        stamps = np.array([text[:19] for text in raw_times], dtype="datetime64[ms]")
        times = stamps.astype(np.int64)
    opens, highs, lows, closes = (values[:, i] for i in range(4))
    volumes = values[:, 4] if has_volume else np.zeros(len(values))
    clean = (
        np.isfinite(values).all()
        and (values[:, :4] > 0).all()
        and (highs >= np.maximum(np.maximum(opens, closes), lows)).all()
        and (lows <= np.minimum(opens, closes)).all()
        and (np.diff(times) > 0).all()
    )
    if not clean:
        return None
    return CandleArrays(
        times, opens.copy(), highs.copy(), lows.copy(), closes.copy(), volumes.copy()
    )


def candle_duration_ms(candles: Sequence[Candle], default: int = 60_000) -> int:
    """The series' candle length: the smallest gap between the first open times."""
    head = list(candles[:21])
    gaps = [b.open_time_ms - a.open_time_ms for a, b in itertools.pairwise(head)]
    positive = [gap for gap in gaps if gap > 0]
    return min(positive) if positive else default


def parse_speed(value: float | int | str) -> float:
    """``"max"`` → inf; ``"realtime"`` → 1; ``"60"``, ``"60x"``, ``60`` → 60."""
    if isinstance(value, (int, float)):
        speed = float(value)
    else:
        text = value.strip().lower()
        if text in ("max", "fast", "inf"):
            return math.inf
        if text in ("realtime", "real", "1x"):
            return 1.0
        speed = float(text.removesuffix("x"))
    if not speed > 0:
        raise ValueError(f"speed must be positive or 'max', not {value!r}")
    return speed


class ClosedCandle(NamedTuple):
    instrument: str
    candle: Candle


def scaled(candle: Candle, scale: float, offset_ms: int = 0) -> Candle:
    if scale == 1.0 and not offset_ms:
        return candle
    return Candle(
        candle.open_time_ms + offset_ms,
        candle.open * scale,
        candle.high * scale,
        candle.low * scale,
        candle.close * scale,
        candle.volume,
    )


class CandleFeed:
    """Replays ``candles`` into ``engine`` on ``instruments`` ({name: price scale} or names).

    ``loop``: start again from the first candle when the series ends (times keep increasing);
    otherwise the feed is ``exhausted``. ``time_offset_ms`` shifts every candle's time (e.g. so a
    replay of 2023 starts now). ``on_close`` callbacks receive ``ClosedCandle`` after each candle;
    ``on_tick(instrument, forming)`` after each point of the path with the candle formed so far.
    """

    def __init__(
        self,
        engine: ExchangeEngine,
        candles: Sequence[Candle],
        instruments: Mapping[str, float] | Sequence[str] = ("BTC-PERPETUAL",),
        *,
        speed: float | int | str = "max",
        loop: bool = False,
        time_offset_ms: int = 0,
        duration_ms: int | None = None,
    ) -> None:
        if not candles:
            raise ValueError("a feed needs at least one candle")
        self.engine = engine
        self.candles = candles
        if isinstance(instruments, Mapping):
            self.instruments = {name: float(scale) for name, scale in instruments.items()}
        else:
            self.instruments = {name: 1.0 for name in instruments}
        for name in self.instruments:
            engine.spec(name)  # unknown instrument: ExchangeError now, not mid-replay
        self.speed = parse_speed(speed)
        self.loop = loop
        self.time_offset_ms = time_offset_ms
        self.duration_ms = duration_ms or candle_duration_ms(candles)
        self.position = 0  # index of the next candle
        self.rounds = 0  # completed passes over the series
        self.stepped = 0
        self.forming: dict[str, Candle] = {}
        self.last_closed: dict[str, Candle] = {}
        self.on_close: list[Callable[[ClosedCandle], Any]] = []
        self.on_tick: list[Callable[[str, Candle], Any]] = []
        self._stopped = False

    @property
    def exhausted(self) -> bool:
        return not self.loop and self.position >= len(self.candles)

    def stop(self) -> None:
        """Make ``run_async`` / iteration end after the current candle."""
        self._stopped = True

    @property
    def _span_ms(self) -> int:
        """How far one pass over the series moves the clock (its times keep increasing)."""
        return self.candles[-1].open_time_ms - self.candles[0].open_time_ms + self.duration_ms

    def _replayed_candle(self, index: int) -> Candle:
        """Candle number ``index`` of the endless replay (pass × series length + position)."""
        rounds, position = divmod(index, len(self.candles))
        return scaled(self.candles[position], 1.0, self.time_offset_ms + rounds * self._span_ms)

    def _next_candle(self) -> Candle | None:
        if self.position >= len(self.candles):
            if not self.loop:
                return None
            self.position = 0
            self.rounds += 1
        candle = self.candles[self.position]
        self.position += 1
        return scaled(candle, 1.0, self.time_offset_ms + self.rounds * self._span_ms)

    def next_open_ms(self) -> int | None:
        """When the next candle will open (None when the feed is exhausted); moves nothing."""
        if self.exhausted:
            return None
        return self._replayed_candle(self.rounds * len(self.candles) + self.position).open_time_ms

    def recent(self, count: int) -> list[Candle]:
        """The last ``count`` candles replayed (at most ``stepped``), oldest first, unscaled, with
        the times the current ``time_offset_ms`` gives them: what a restored replay rebuilds its
        candle history from without stepping the engine again."""
        end = self.rounds * len(self.candles) + self.position
        start = max(0, end - min(count, self.stepped))
        return [self._replayed_candle(index) for index in range(start, end)]

    def _emit_close(self, candle: Candle) -> list[ClosedCandle]:
        closed = []
        for name, scale in self.instruments.items():
            item = ClosedCandle(name, scaled(candle, scale))
            self.last_closed[name] = item.candle
            self.forming.pop(name, None)
            closed.append(item)
            for callback in list(self.on_close):
                callback(item)
        return closed

    def step(self, n: int = 1) -> list[ClosedCandle]:
        """Replay the next ``n`` candles at once (no pacing); returns the closed candles."""
        closed: list[ClosedCandle] = []
        engine = self.engine
        for _ in range(n):
            candle = self._next_candle()
            if candle is None:
                break
            for name, scale in self.instruments.items():
                engine.step_candle(
                    name,
                    candle.open * scale,
                    candle.high * scale,
                    candle.low * scale,
                    candle.close * scale,
                    candle.open_time_ms,
                    self.duration_ms,
                )
            self.stepped += 1
            closed.extend(self._emit_close(candle))
        return closed

    def run(self, limit: int | None = None) -> int:
        """Replay as fast as possible until the end (or ``limit`` candles); returns the count."""
        count = 0
        while (limit is None or count < limit) and not self.exhausted and not self._stopped:
            if not self.step(1):
                break
            count += 1
        return count

    def __iter__(self) -> Iterator[ClosedCandle]:
        while not self.exhausted and not self._stopped:
            yield from self.step(1)

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - asyncio.get_running_loop().time()
        await asyncio.sleep(delay if delay > 0 else 0)

    async def run_async(self) -> AsyncIterator[ClosedCandle]:
        """Replay at ``speed``, yielding each closed candle; ends when exhausted or stopped."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        paced = 0  # candles replayed since start
        real_ms = self.duration_ms / self.speed if math.isfinite(self.speed) else 0.0
        while not self._stopped:
            candle = self._next_candle()
            if candle is None:
                return
            if real_ms:
                await self._walk_paced(candle, start + paced * real_ms / 1000, real_ms / 1000)
            else:
                for name, scale in self.instruments.items():
                    self.engine.step_candle(
                        name,
                        candle.open * scale,
                        candle.high * scale,
                        candle.low * scale,
                        candle.close * scale,
                        candle.open_time_ms,
                        self.duration_ms,
                    )
                await asyncio.sleep(0)
            paced += 1
            self.stepped += 1
            for item in self._emit_close(candle):
                yield item

    def __aiter__(self) -> AsyncIterator[ClosedCandle]:
        return self.run_async()

    async def _walk_paced(self, candle: Candle, begin: float, length: float) -> None:
        """Walk the candle's path in real time: open, extremes at 1/3 and 2/3, close at the end."""
        engine = self.engine
        path = intra_candle_path(candle.open, candle.high, candle.low, candle.close)
        offsets = (0, self.duration_ms // 3, 2 * self.duration_ms // 3, self.duration_ms - 1)
        fractions = (0.0, 1 / 3, 2 / 3, 1.0)
        high = low = candle.open
        for point, (price, offset, fraction) in enumerate(
            zip(path, offsets, fractions, strict=True)
        ):
            await self._sleep_until(begin + fraction * length)
            high = max(high, price)
            low = min(low, price)
            timestamp = candle.open_time_ms + offset
            for name, scale in self.instruments.items():
                if point == 0:
                    engine.set_price(name, price * scale, timestamp)
                else:
                    engine.move_price(name, price * scale, timestamp)
                forming = Candle(
                    candle.open_time_ms,
                    candle.open * scale,
                    high * scale,
                    low * scale,
                    price * scale,
                    candle.volume * fraction,
                )
                self.forming[name] = forming
                for callback in list(self.on_tick):
                    callback(name, forming)
