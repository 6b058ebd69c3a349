"""Public market data: instruments, ticker, order book, chart data, index price."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from apps.brokers.base import InstrumentSpec
from apps.brokers.simulator.wire.channels import RESOLUTIONS, resolution_minutes
from apps.brokers.simulator.wire.errors import invalid_params
from apps.brokers.simulator.wire.registry import Call, rpc
from apps.brokers.simulator.wire.shapes import instrument_to_deribit, ticker_to_deribit

CURRENCIES = ("BTC", "ETH", "USDC", "USDT", "EURR", "any")
KINDS = ("future", "option", "spot", "future_combo", "option_combo")


def instrument_param(call: Call, name: str = "instrument_name") -> InstrumentSpec:
    """The spec of the instrument the request names (-32602 "instrument not found")."""
    instrument = call.params.str(name, required=True)
    spec = call.server.market.engine.specs.get(instrument)
    if spec is None:
        raise invalid_params("instrument not found", name)
    return spec


def currency_param(call: Call, *, required: bool = True, allow_any: bool = True) -> str | None:
    currency = call.params.str("currency", required=required)
    if currency is None:
        return None
    if currency not in CURRENCIES or (currency == "any" and not allow_any):
        raise invalid_params("invalid currency", "currency")
    return currency


def kind_param(call: Call) -> str | None:
    return call.params.str("kind", choices=(*KINDS, "any"))


CURRENCY_DETAILS = {
    "BTC": ("Bitcoin", "BITCOIN", 1, Decimal("0.0001"), 8),
    "ETH": ("Ethereum", "ETHER", 1, Decimal("0.0006"), 8),
    "USDC": ("USD Coin", "ETHER", 1, Decimal("1"), 6),
}


@rpc("public/get_currencies")
def get_currencies(call: Call) -> list[dict[str, Any]]:
    settled = {spec.settlement_currency for spec in call.server.market.engine.specs.values()}
    answer = []
    for currency in sorted(settled):
        name, coin, confirmations, fee, decimals = CURRENCY_DETAILS.get(
            currency, (currency, "ETHER", 1, Decimal(0), 8)
        )
        answer.append(
            {
                "currency": currency,
                "currency_long": name,
                "coin_type": coin,
                "min_confirmations": confirmations,
                "withdrawal_fee": fee,
                "min_withdrawal_fee": fee,
                "withdrawal_priorities": [],
                "fee_precision": 4,
                "decimals": decimals,
                "in_cross_collateral_pool": False,
            }
        )
    return answer


@rpc("public/get_instruments")
def get_instruments(call: Call) -> list[dict[str, Any]]:
    # Deribit's 2.1.1 description requires currency; the live API (and ccxt) also calls
    # without it, for every instrument
    currency = currency_param(call, required=False) or "any"
    kind = kind_param(call)
    if call.params.bool("expired", default=False) or kind not in (None, "future", "any"):
        return []
    return [
        instrument_to_deribit(spec)
        for spec in call.server.market.engine.specs.values()
        if currency in ("any", spec.settlement_currency)
    ]


@rpc("public/get_instrument")
def get_instrument(call: Call) -> dict[str, Any]:
    return instrument_to_deribit(instrument_param(call))


@rpc("public/get_contract_size")
def get_contract_size(call: Call) -> dict[str, Any]:
    return {"contract_size": instrument_param(call).contract_size}


@rpc("public/ticker")
def ticker(call: Call) -> dict[str, Any]:
    spec = instrument_param(call)
    return ticker_to_deribit(call.server.market.engine, spec.name)


@rpc("public/get_order_book")
def get_order_book(call: Call) -> dict[str, Any]:
    spec = instrument_param(call)
    call.params.int("depth")
    body = ticker_to_deribit(call.server.market.engine, spec.name)
    body["bids"] = [[body["best_bid_price"], body["best_bid_amount"]]]
    body["asks"] = [[body["best_ask_price"], body["best_ask_amount"]]]
    body["change_id"] = call.server.market.engine.version
    return body


@rpc("public/get_tradingview_chart_data")
def get_tradingview_chart_data(call: Call) -> dict[str, Any]:
    spec = instrument_param(call)
    start = call.params.int("start_timestamp", required=True)
    end = call.params.int("end_timestamp", required=True)
    resolution = call.params.str("resolution", required=True, choices=RESOLUTIONS)
    assert start is not None and end is not None and resolution is not None
    return call.server.market.chart.chart_data(
        spec.name, start, end, resolution_minutes(resolution), until_ms=call.server.now_ms()
    )


@rpc("public/get_index_price")
def get_index_price(call: Call) -> dict[str, Any]:
    index_name = call.params.str("index_name", required=True)
    for spec in call.server.market.engine.specs.values():
        if instrument_to_deribit(spec)["price_index"] == index_name:
            price: Decimal = call.server.market.engine.ticker(spec.name).index_price
            return {"index_price": price, "estimated_delivery_price": price}
    raise invalid_params("invalid index_name", "index_name")
