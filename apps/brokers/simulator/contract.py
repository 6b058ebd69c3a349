"""Contract math of inverse and linear perpetuals, exact in Decimal.

Inverse (BTC-PERPETUAL): amount A in USD; a long from entry E to exit X makes A·(1/E − 1/X) coin,
a short A·(1/X − 1/E); the average entry of several fills is the USD-weighted harmonic mean
Σusd / Σ(usd/p); the fee is rate · A / price coin.
Linear (BTC_USDC-PERPETUAL): amount q in the base coin; a long makes q·(X − E) USDC, a short
q·(E − X); the average entry is the quantity-weighted mean; the fee is rate · q · price USDC.

Amounts of P&L and fees are rounded (half-even) to the settlement currency's quantum
(``instruments.CURRENCY_QUANTUM``) once per fill, so balances and their sums stay exact.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from apps.brokers.base import InstrumentSpec

from .instruments import CURRENCY_QUANTUM

ZERO = Decimal(0)
DEFAULT_QUANTUM = Decimal("1e-10")


def quantum(currency: str) -> Decimal:
    return CURRENCY_QUANTUM.get(currency, DEFAULT_QUANTUM)


def money(value: Decimal, currency: str) -> Decimal:
    """``value`` rounded to the currency's quantum."""
    return value.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


def notional(spec: InstrumentSpec, amount: Decimal, price: Decimal) -> Decimal:
    """Value of ``amount`` at ``price`` in the settlement currency (not rounded)."""
    if spec.is_inverse:
        return amount / price
    return amount * price


def fee(spec: InstrumentSpec, amount: Decimal, price: Decimal, *, maker: bool) -> Decimal:
    """The fee of one fill in the settlement currency (negative for a maker rebate)."""
    rate = spec.maker_fee if maker else spec.taker_fee
    return money(rate * notional(spec, amount, price), spec.settlement_currency)


def pnl(
    spec: InstrumentSpec, *, long: bool, amount: Decimal, entry: Decimal, exit: Decimal
) -> Decimal:
    """Realized P&L of closing ``amount`` opened at ``entry`` and closed at ``exit``."""
    gain = amount / entry - amount / exit if spec.is_inverse else amount * (exit - entry)
    return money(gain if long else -gain, spec.settlement_currency)


def average_price(spec: InstrumentSpec, fills: list[tuple[Decimal, Decimal]]) -> Decimal:
    """Average entry of ``(amount, price)`` fills in one direction."""
    total = sum((amount for amount, _ in fills), ZERO)
    if spec.is_inverse:
        return total / sum((amount / price for amount, price in fills), ZERO)
    return sum((amount * price for amount, price in fills), ZERO) / total
