"""Engine-level fault hooks: refuse the next order of a kind, move the price.

The wire server's fault control (``/_sim/``) and tests arm them on ``engine.faults``:

    engine.faults.reject_next("stop", 10009)          # the next stop order is refused
    engine.faults.reject_next("primary", 10040, count=2)
    move_price(engine, "BTC-PERPETUAL", 20_000)       # a gap to 20,000

Kinds: ``primary`` (an order of type market/limit placed by buy/sell), ``stop`` (stop_market /
stop_limit), ``take`` (take_market / take_limit), ``secondary`` (a market/limit secondary of an
OTO), ``any``. A standalone order of an armed kind is refused with ``ExchangeError(code)``. A
linked secondary (the stop or target of an OTOCO) is checked when the primary's fill activates
it: it becomes ``rejected`` (its OCO partner is then cancelled), so the position stays unprotected
— which is what the safety tests need to see handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ExchangeError

if TYPE_CHECKING:
    from .engine import ExchangeEngine

FAULT_KINDS = ("primary", "stop", "take", "secondary", "any")


@dataclass(slots=True)
class ArmedRejection:
    kind: str
    code: int
    message: str | None
    data: Any
    remaining: int


class EngineFaults:
    """Rejections armed for the next orders, consumed in the order they were armed."""

    def __init__(self) -> None:
        self.armed: list[ArmedRejection] = []

    def reject_next(
        self,
        kind: str,
        code: int,
        message: str | None = None,
        data: Any = None,
        *,
        count: int = 1,
    ) -> None:
        """Refuse the next ``count`` orders of ``kind`` with Deribit error ``code``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        self.armed.append(ArmedRejection(kind, int(code), message, data, count))

    def clear(self) -> None:
        self.armed.clear()

    def take_rejection(self, kind: str) -> ExchangeError | None:
        """The error for an order of ``kind`` if one is armed (and consume it), else None."""
        if not self.armed:
            return None
        for index, armed in enumerate(self.armed):
            if armed.kind in (kind, "any"):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    del self.armed[index]
                return ExchangeError(armed.code, armed.message, armed.data)
        return None


def move_price(engine: ExchangeEngine, instrument: str, price: float) -> None:
    """Jump the instrument's price to ``price`` now (stops crossed fill at ``price``)."""
    engine.set_price(instrument, price)
