"""Loss of a closed round trip computed from the exchange's fills alone (test helper)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from apps.brokers.base import Side


def fills_loss(inverse: bool, fills: Iterable[Any]) -> tuple[Fraction, Fraction]:
    """(price loss, fees) of a closed round trip, settlement currency, exact. ``fills``: the
    broker's ``Fill`` values or the simulator's ``SimTrade`` records (price, amount, fee, direction).

    Inverse: a buy of A USD at P counts +A/P coin, a sell −A/P, so a closed long sums to
    A·(1/E − 1/X) and a short to A·(1/X − 1/E) (Deribit's formulas). Linear: a buy of q at P
    pays q·P USDC, a sell receives it: q·(X − E) for a long, q·(E − X) for a short.
    """
    pnl = Fraction(0)
    fees = Fraction(0)
    for fill in fills:
        amount, price = Fraction(fill.amount), Fraction(fill.price)
        sign = 1 if Side(fill.direction) is Side.BUY else -1
        pnl += sign * amount / price if inverse else -sign * amount * price
        fees += Fraction(fill.fee)
    return -pnl, fees
