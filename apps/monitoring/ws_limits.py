"""Rate limits of the live WebSocket: new connections per user and per address (a fixed window
in Redis, shared by every web process) and open sockets per user (per process)."""

from __future__ import annotations

import threading
import time

from django.conf import settings

from tradebaas.redis import redis_client, rkey

_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
}
_open: dict[str, int] = {}
_open_lock = threading.Lock()


def parse_rate(rate: str) -> tuple[int, int]:
    """``"120/min"`` → ``(120, 60)``."""
    count, _, period = rate.partition("/")
    if not count.strip().isdigit() or period.strip() not in _PERIODS:
        raise ValueError(f"WS_CONNECT_RATE is malformed: {rate!r} (use e.g. 120/min)")
    return int(count), _PERIODS[period.strip()]


def connect_allowed(*, user_id: int | str, address: str) -> str | None:
    """None when this connection may proceed, else why it is refused. Counts the attempt."""
    limit, period = parse_rate(settings.WS_CONNECT_RATE)
    window = int(time.time() // period)
    client = redis_client()
    pipe = client.pipeline()
    keys = [rkey(f"wsrate:user:{user_id}:{window}"), rkey(f"wsrate:addr:{address}:{window}")]
    for key in keys:
        pipe.incr(key)
        pipe.expire(key, period * 2)
    results = pipe.execute()
    user_count, addr_count = results[0], results[2]
    if user_count > limit:
        return "user_rate"
    if addr_count > limit:
        return "address_rate"
    return None


def socket_opened(user_id: int | str) -> bool:
    """Count an open socket for the user; False (not counted) when the user has too many."""
    key = str(user_id)
    with _open_lock:
        if _open.get(key, 0) >= settings.WS_MAX_SOCKETS_PER_USER:
            return False
        _open[key] = _open.get(key, 0) + 1
        return True


def socket_closed(user_id: int | str) -> None:
    key = str(user_id)
    with _open_lock:
        remaining = _open.get(key, 0) - 1
        if remaining > 0:
            _open[key] = remaining
        else:
            _open.pop(key, None)
