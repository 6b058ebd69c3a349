"""Read OHLCV candles from a CSV file into :class:`Candles`. Pure: no Django.

Columns ``open_time,open,high,low,close[,volume]`` (a header line is required). ``open_time``
is ISO 8601 (``2023-03-01 00:00:00+00:00``; no offset means UTC) or a unix timestamp in
seconds or milliseconds. A bad file raises :class:`CandleFileError` naming the line.
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from apps.strategies.base import Candles

REQUIRED = ("open_time", "open", "high", "low", "close")


class CandleFileError(ValueError):
    """The candle file cannot be used; the message names the file and the line."""


def _time_ms(text: str) -> int:
    text = text.strip()
    if text.replace(".", "", 1).isdigit():
        value = float(text)
        return int(value * 1000) if value < 100_000_000_000 else int(value)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def load_csv(path: str | Path) -> Candles:
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CandleFileError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise CandleFileError(f"{path}, line 1: missing column(s) {', '.join(missing)}")
        index = [header.index(name) for name in REQUIRED]
        volume_at = header.index("volume") if "volume" in header else None
        times: list[int] = []
        rows: list[tuple[float, float, float, float, float]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise CandleFileError(
                    f"{path}, line {line_no}: expected {len(header)} fields, got {len(row)}"
                )
            try:
                t = _time_ms(row[index[0]])
                o, h, lo, c = (float(row[i]) for i in index[1:])
                v = float(row[volume_at]) if volume_at is not None else 0.0
            except ValueError as exc:
                raise CandleFileError(f"{path}, line {line_no}: {exc}") from None
            if not all(math.isfinite(x) and x > 0 for x in (o, h, lo, c)) or v < 0:
                raise CandleFileError(f"{path}, line {line_no}: prices must be positive numbers")
            if h < max(o, c) or lo > min(o, c):
                raise CandleFileError(
                    f"{path}, line {line_no}: high/low do not contain open and close"
                )
            if times and t <= times[-1]:
                raise CandleFileError(
                    f"{path}, line {line_no}: open_time is not after the previous line's"
                )
            times.append(t)
            rows.append((o, h, lo, c, v))
    if not rows:
        raise CandleFileError(f"{path}: no candles")
    table = np.array(rows, dtype=np.float64)
    return Candles(
        open_time_ms=np.array(times, dtype=np.int64),
        open=table[:, 0].copy(),
        high=table[:, 1].copy(),
        low=table[:, 2].copy(),
        close=table[:, 3].copy(),
        volume=table[:, 4].copy(),
    )
