"""Deribit's credit-based rate limits, simplified to two token buckets per account:
matching-engine requests (buy, sell, edit, cancel*, close_position; default 5/s, burst 20) and
everything else (default 20/s, burst 100). A request that finds its bucket empty is answered
10028 ``too_many_requests`` and, as Deribit's current docs say, the session is terminated."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # capacity
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.stamp = self.clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class RateLimits:
    matching_engine: TokenBucket
    other: TokenBucket

    @classmethod
    def deribit_defaults(cls) -> RateLimits:
        return cls(TokenBucket(5, 20), TokenBucket(20, 100))

    def allow(self, *, matching_engine: bool) -> bool:
        return (self.matching_engine if matching_engine else self.other).take()
