"""Subscription channel names: parsing, and which events each channel receives."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

RESOLUTIONS = ("1", "3", "5", "10", "15", "30", "60", "120", "180", "360", "720", "1D")
INTERVALS = ("raw", "100ms", "agg2")
USER_FAMILIES = ("user.orders", "user.trades", "user.changes")
KINDS = ("future", "any")


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    family: str  # chart.trades, ticker, user.orders, user.trades, user.changes, user.portfolio
    instrument: str | None = None
    kind: str | None = None
    currency: str | None = None
    interval: str | None = None  # raw, 100ms, agg2, or a chart resolution

    @property
    def private(self) -> bool:
        return self.family.startswith("user.")

    def covers(self, instrument: str, currency: str) -> bool:
        """Whether this user channel receives events of ``instrument`` (settled in ``currency``)."""
        if self.instrument is not None:
            return self.instrument == instrument
        if self.family == "user.portfolio":
            return self.currency in (currency.lower(), "any")
        return self.kind in KINDS and self.currency in (currency, "any")


def resolution_minutes(resolution: str) -> int:
    return 1440 if resolution == "1D" else int(resolution)


def parse(name: str, instruments: Collection[str]) -> Channel | None:
    """The channel ``name`` denotes, or None when it is not one the simulator serves."""
    if not isinstance(name, str) or len(name) > 200:
        return None
    parts = name.split(".")
    head = ".".join(parts[:2])
    if head == "chart.trades" and len(parts) == 4:
        instrument, resolution = parts[2], parts[3]
        if instrument in instruments and resolution in RESOLUTIONS:
            return Channel(name, head, instrument=instrument, interval=resolution)
        return None
    if parts[0] == "ticker" and len(parts) == 3:
        if parts[1] in instruments and parts[2] in INTERVALS:
            return Channel(name, "ticker", instrument=parts[1], interval=parts[2])
        return None
    if head == "user.portfolio" and len(parts) == 3:
        currency = parts[2].lower()
        if currency in ("btc", "eth", "usdc", "any"):
            return Channel(name, head, currency=currency)
        return None
    if head in USER_FAMILIES:
        if len(parts) == 4 and parts[2] in instruments and parts[3] in INTERVALS:
            return Channel(name, head, instrument=parts[2], interval=parts[3])
        if (
            len(parts) == 5
            and parts[2] in KINDS
            and parts[3] in ("BTC", "ETH", "USDC", "any")
            and parts[4] in INTERVALS
        ):
            return Channel(name, head, kind=parts[2], currency=parts[3], interval=parts[4])
    return None
