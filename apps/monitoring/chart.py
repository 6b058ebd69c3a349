"""Candles for the page's chart: the loop records each closed candle here and pushes it live.

A bounded Redis list per instrument (the last ``KEEP`` candles), so any web process can draw the
chart the loop sees, and a new page gets history without asking the broker.
"""

from __future__ import annotations

import json
import logging

from django.utils.html import format_html

from apps.brokers.base import Candle
from tradebaas.redis import redis_client, rkey

from .live import live_push

log = logging.getLogger(__name__)
KEEP = 500


def _key(instrument: str) -> str:
    return rkey(f"chart:{instrument}")


def _as_point(candle: Candle) -> dict:
    return {
        "time": candle.open_time_ms // 1000,
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
    }


def record_candles(instrument: str, candles: list[Candle], *, push: bool = True) -> None:
    """Append closed candles (oldest first). Never raises into the loop."""
    if not candles:
        return
    try:
        client = redis_client()
        pipe = client.pipeline()
        for candle in candles:
            pipe.rpush(_key(instrument), json.dumps(_as_point(candle)))
        pipe.ltrim(_key(instrument), -KEEP, -1)
        pipe.execute()
        if push:
            live_push(
                format_html(
                    '<template id="chart-candle" hx-swap-oob="true" data-instrument="{}" '
                    "data-candle='{}'></template>",
                    instrument,
                    json.dumps(_as_point(candles[-1])),
                )
            )
    except Exception:
        log.warning("chart candle not recorded", exc_info=True)


def candles(instrument: str) -> list[dict]:
    if not instrument:
        return []
    rows = redis_client().lrange(_key(instrument), 0, -1)
    points: dict[int, dict] = {}
    for row in rows:
        point = json.loads(row)
        points[point["time"]] = point  # a candle recorded twice (after a restart) counts once
    return [points[t] for t in sorted(points)]
