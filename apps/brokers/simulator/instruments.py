"""Deribit's perpetual specs, the simulator's default instrument table.

Inverse (``reversed``) perpetuals: amount in USD (a multiple of the contract size), P&L, margin and
fees in the coin. Linear USDC perpetuals: amount in the base coin, settled in USDC. Deribit changed
the linear specs on 2026-08-18 and the new values are not known here, so the linear rows are the
last documented ones; an engine takes its own table (``ExchangeEngine(specs=...)``) and tests
override it.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from apps.brokers.base import InstrumentKind, InstrumentSpec

D = Decimal

DEFAULT_SPECS: dict[str, InstrumentSpec] = {
    "BTC-PERPETUAL": InstrumentSpec(
        name="BTC-PERPETUAL",
        kind=InstrumentKind.INVERSE,
        base_currency="BTC",
        quote_currency="USD",
        settlement_currency="BTC",
        contract_size=D("10"),
        min_amount=D("10"),
        amount_step=D("10"),
        tick_size=D("0.5"),
        max_leverage=D("50"),
        maker_fee=D("0"),
        taker_fee=D("0.0005"),
    ),
    "ETH-PERPETUAL": InstrumentSpec(
        name="ETH-PERPETUAL",
        kind=InstrumentKind.INVERSE,
        base_currency="ETH",
        quote_currency="USD",
        settlement_currency="ETH",
        contract_size=D("1"),
        min_amount=D("1"),
        amount_step=D("1"),
        tick_size=D("0.05"),
        max_leverage=D("50"),
        maker_fee=D("0"),
        taker_fee=D("0.0005"),
    ),
    "BTC_USDC-PERPETUAL": InstrumentSpec(
        name="BTC_USDC-PERPETUAL",
        kind=InstrumentKind.LINEAR,
        base_currency="BTC",
        quote_currency="USDC",
        settlement_currency="USDC",
        contract_size=D("0.001"),
        min_amount=D("0.001"),
        amount_step=D("0.001"),
        tick_size=D("1"),
        max_leverage=D("50"),
        maker_fee=D("0"),
        taker_fee=D("0.0005"),
    ),
    "ETH_USDC-PERPETUAL": InstrumentSpec(
        name="ETH_USDC-PERPETUAL",
        kind=InstrumentKind.LINEAR,
        base_currency="ETH",
        quote_currency="USDC",
        settlement_currency="USDC",
        contract_size=D("0.001"),
        min_amount=D("0.001"),
        amount_step=D("0.001"),
        tick_size=D("0.05"),
        max_leverage=D("50"),
        maker_fee=D("0"),
        taker_fee=D("0.0005"),
    ),
}

# Rough price ratio of ETH to BTC, so one BTC candle file can drive the ETH books too.
ETH_PER_BTC_PRICE = 0.07

# Balances a fresh simulated account starts with (as the wire server's --balance default).
DEFAULT_BALANCES: dict[str, Decimal] = {"BTC": D("1"), "ETH": D("10"), "USDC": D("100000")}

# Fixed-point quantum of each settlement currency: P&L and fees are rounded to it per fill, so
# sums of balances, P&L and fees stay exact.
CURRENCY_QUANTUM: dict[str, Decimal] = {"BTC": D("1e-10"), "ETH": D("1e-10"), "USDC": D("1e-8")}


def default_specs() -> dict[str, InstrumentSpec]:
    """A fresh copy of the default table (safe to change)."""
    return dict(DEFAULT_SPECS)


def with_fees(spec: InstrumentSpec, *, maker: Decimal, taker: Decimal) -> InstrumentSpec:
    """The spec with other maker/taker fee rates."""
    return replace(spec, maker_fee=maker, taker_fee=taker)


def currencies(specs: dict[str, InstrumentSpec]) -> list[str]:
    """Settlement currencies of a table, in first-seen order."""
    return list(dict.fromkeys(spec.settlement_currency for spec in specs.values()))
