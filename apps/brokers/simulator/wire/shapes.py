"""Deribit result objects the engine's records do not carry whole: instruments, the full ticker,
the full account summary. Everything else comes from ``records.*.to_deribit()``."""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any

from apps.brokers.base import InstrumentSpec
from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.records import SimAccount

PERPETUAL_EXPIRY_MS = 32503708800000  # Deribit's "year 3000" expiry of perpetuals
CREATED_MS = 1534167754000
INSTRUMENT_IDS = {
    "BTC-PERPETUAL": 124972,
    "ETH-PERPETUAL": 124971,
    "BTC_USDC-PERPETUAL": 210761,
    "ETH_USDC-PERPETUAL": 210760,
}
PRICE_BAND = Decimal("0.02")  # min_price / max_price around the mark


def instrument_to_deribit(spec: InstrumentSpec) -> dict[str, Any]:
    kind = "reversed" if spec.is_inverse else "linear"
    index = f"{spec.base_currency.lower()}_{'usd' if spec.is_inverse else 'usdc'}"
    return {
        "instrument_name": spec.name,
        "instrument_id": INSTRUMENT_IDS.get(spec.name, zlib.crc32(spec.name.encode()) % 1_000_000),
        "kind": "future",
        "settlement_period": "perpetual",
        "instrument_type": kind,
        "future_type": kind,
        "base_currency": spec.base_currency,
        "quote_currency": spec.quote_currency,
        "counter_currency": spec.quote_currency,
        "settlement_currency": spec.settlement_currency,
        "price_index": index,
        "contract_size": spec.contract_size,
        "tick_size": spec.tick_size,
        "tick_size_steps": [],
        "min_trade_amount": spec.min_amount,
        "max_leverage": spec.max_leverage,
        "max_liquidation_commission": Decimal("0.0075"),
        "maker_commission": spec.maker_fee,
        "taker_commission": spec.taker_fee,
        "block_trade_commission": Decimal("0.00025"),
        "block_trade_min_trade_amount": 200000 if spec.is_inverse else 25,
        "block_trade_tick_size": Decimal("0.01"),
        "is_active": True,
        "state": "open",
        "rfq": False,
        "creation_timestamp": CREATED_MS,
        "expiration_timestamp": PERPETUAL_EXPIRY_MS,
    }


def ticker_to_deribit(engine: ExchangeEngine, instrument: str) -> dict[str, Any]:
    ticker = engine.ticker(instrument)
    body = ticker.to_deribit()
    mark = ticker.mark_price
    tick = engine.specs[instrument].tick_size
    band = (mark * PRICE_BAND / tick).to_integral_value() * tick
    body.update(
        {
            "best_bid_amount": 10000 if engine.specs[instrument].is_inverse else 1,
            "best_ask_amount": 10000 if engine.specs[instrument].is_inverse else 1,
            "estimated_delivery_price": ticker.index_price,
            "settlement_price": mark,
            "min_price": mark - band,
            "max_price": mark + band,
            "interest_value": 0,
            "stats": {
                "high": ticker.last_price,
                "low": ticker.last_price,
                "volume": 0,
                "volume_usd": 0,
                "price_change": 0,
            },
        }
    )
    return body


def account_to_deribit(account: SimAccount) -> dict[str, Any]:
    body = account.to_deribit()
    zero_options = {
        "options_pl": 0,
        "options_session_upl": 0,
        "options_session_rpl": 0,
        "options_delta": 0,
        "options_gamma": 0,
        "options_vega": 0,
        "options_theta": 0,
        "options_value": 0,
        "options_gamma_map": {},
        "options_theta_map": {},
        "options_vega_map": {},
    }
    for key, value in zero_options.items():
        body.setdefault(key, value)
    body.setdefault("projected_delta_total", body.get("delta_total", 0))
    body.setdefault("security_keys_enabled", False)
    body.setdefault("mmp_enabled", False)
    body.setdefault("system_name", "paper")
    body.setdefault("username", "paper")
    body.setdefault("email", "paper@example.invalid")
    body.setdefault("type", "main")
    body.setdefault("id", 1)
    body.setdefault("spot_reserve", 0)
    body.setdefault("additional_reserve", 0)
    body.setdefault("fee_balance", 0)
    body.setdefault(
        "limits",
        {
            "limits_per_currency": False,
            "non_matching_engine": {"rate": 20, "burst": 100},
            "matching_engine": {"trading": {"total": {"rate": 5, "burst": 20}}},
        },
    )
    return body
