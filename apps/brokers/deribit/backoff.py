"""Pacing: exponential back-off with jitter for reconnects, and a token bucket that keeps the
client under Deribit's rate limits (a request past the limit gets 10028 and the session is
terminated)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

# Deribit's default account limits: matching-engine requests 5/s burst 20, others 20/s burst 100.
DERIBIT_DEFAULT_RATE_LIMITS = ((5.0, 20.0), (20.0, 100.0))


def backoff_delays(
    base: float = 0.5,
    cap: float = 30.0,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Endless delays: attempt n waits between half and all of ``min(cap, base * factor**(n-1))``.

    "Equal jitter": the ceiling grows exponentially, and the random half spreads clients that
    lost the same server at the same moment so they do not all come back at once.
    """
    if base <= 0 or cap <= 0 or factor < 1:
        raise ValueError("base and cap must be positive, factor at least 1")
    rng = rng or random.Random()
    ceiling = base
    while True:
        step = min(cap, ceiling)
        yield step / 2 + rng.uniform(0, step / 2)
        ceiling *= factor


class TokenBucket:
    """``acquire()`` waits until a request may go: ``rate`` per second, ``burst`` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    async def acquire(self) -> float:
        """Take one token; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return waited
            pause = (1 - self._tokens) / self.rate
            await asyncio.sleep(pause)
            waited += pause
