"""One instrument inside the engine: its prices, resting orders, thresholds and position.

The thresholds are what makes replays fast: ``up`` is the lowest price at which a rising price
fills or fires a resting order, ``down`` the highest at which a falling price does; a candle whose
high and low stay strictly between them changes nothing but the price.
"""

from __future__ import annotations

from decimal import Decimal

from apps.brokers.base import InstrumentSpec

from . import contract
from .orders import INF, ZERO, WorkingOrder


def intra_candle_path(
    open_: float, high: float, low: float, close: float
) -> tuple[float, float, float, float]:
    """The four points a candle is walked through: open, nearer extreme, farther extreme, close.

    Ties (open as far from the high as from the low): a candle closing below its open goes to
    the high first; any other candle (rising or flat) to the low first.
    """
    up = high - open_
    down = open_ - low
    if up < down or (up == down and close < open_):
        return (open_, high, low, close)
    return (open_, low, high, close)


class Book:
    """One instrument: its prices, resting orders, thresholds and the account's position in it."""

    __slots__ = (
        "currency",
        "dirty",
        "down",
        "entry_value",
        "index",
        "inverse",
        "last",
        "mark",
        "name",
        "realized",
        "resting",
        "size",
        "spec",
        "split",
        "tick",
        "tick_f",
        "up",
    )

    def __init__(self, spec: InstrumentSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.currency = spec.settlement_currency
        self.inverse = spec.is_inverse
        self.tick = spec.tick_size
        self.tick_f = float(spec.tick_size)
        self.last = 0.0
        self.mark = 0.0
        self.index = 0.0
        self.split = False  # mark or index set apart from last
        self.resting: list[WorkingOrder] = []  # active live orders the price can reach
        self.up = INF  # lowest price at which a rising price fills / triggers something
        self.down = -INF  # highest price at which a falling price does
        self.dirty = False
        self.size = ZERO  # signed position, amount units
        self.entry_value = ZERO  # inverse: Σ usd/price (coin); linear: Σ qty·price (USDC)
        self.realized = ZERO

    def ref_price(self, order: WorkingOrder) -> float:
        if order.trigger_price is not None and not order.triggered:
            trigger = order.trigger
            if trigger == "mark_price":
                return self.mark
            if trigger == "index_price":
                return self.index
        return self.last

    def price_on_tick(self, value: float) -> Decimal:
        return Decimal(round(value / self.tick_f)) * self.tick

    def reducible(self, order: WorkingOrder) -> Decimal:
        """How much of the position an order in ``order``'s direction can reduce."""
        if order.is_buy:
            return -self.size if self.size < 0 else ZERO
        return self.size if self.size > 0 else ZERO

    def eligible(self, order: WorkingOrder) -> bool:
        # a resting reduce-only limit that cannot reduce the position would never fill: skip it
        if order.reduce_only and (order.trigger_price is None or order.triggered):
            return self.size < 0 if order.is_buy else self.size > 0
        return True

    def recompute(self) -> None:
        up = INF
        down = -INF
        for order in self.resting:
            if not self.eligible(order):
                continue
            if order.up:
                if order.th < up:
                    up = order.th
            elif order.th > down:
                down = order.th
        self.up = up
        self.down = down
        self.dirty = False

    def entry_price(self) -> Decimal:
        if not self.size:
            return ZERO
        if self.inverse:
            return abs(self.size) / self.entry_value
        return self.entry_value / abs(self.size)

    def floating(self) -> Decimal:
        if not self.size or self.mark <= 0:
            return ZERO
        mark = Decimal(repr(self.mark))
        size = abs(self.size)
        gain = self.entry_value - size / mark if self.inverse else size * mark - self.entry_value
        return contract.money(gain if self.size > 0 else -gain, self.currency)
