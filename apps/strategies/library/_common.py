"""Helpers shared by strategies in this library (a module starting with _ is not a strategy)."""

from __future__ import annotations

from apps.strategies.base import ClosedTrade

DAY_MS = 86_400_000
MINUTE_MS = 60_000


class DailyLimit:
    """Counts trades per UTC day of their entry; ``reached`` at the day of a candle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[int, int] = {}

    def record(self, trade: ClosedTrade) -> None:
        day = trade.entry_time_ms // DAY_MS
        self._counts = {day: self._counts.get(day, 0) + 1}

    def count(self, time_ms: int) -> int:
        return self._counts.get(time_ms // DAY_MS, 0)

    def reached(self, time_ms: int) -> bool:
        return self.count(time_ms) >= self.limit


class Cooldown:
    """No decision on a candle that opened before ``minutes`` after the last exit."""

    def __init__(self, minutes: int) -> None:
        self.minutes = minutes
        self.until_ms = 0

    def record(self, trade: ClosedTrade) -> None:
        self.until_ms = trade.exit_time_ms + self.minutes * MINUTE_MS

    def active(self, candle_open_ms: int) -> bool:
        return candle_open_ms < self.until_ms
