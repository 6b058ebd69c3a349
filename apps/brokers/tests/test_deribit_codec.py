"""Deribit codec, error table and back-off: pure functions, no socket."""

from __future__ import annotations

import json
import random
import time
from decimal import Decimal

import pytest

from apps.brokers.base import (
    AuthenticationFailed,
    BracketRequest,
    BrokerError,
    InstrumentKind,
    NotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
    RetryableError,
    Side,
)
from apps.brokers.deribit import codec
from apps.brokers.deribit.backoff import TokenBucket, backoff_delays
from apps.brokers.deribit.errors import ERRORS, error_from_rpc


def _bracket(**overrides) -> BracketRequest:
    values = dict(
        bracket_id="b42",
        instrument="BTC-PERPETUAL",
        side=Side.BUY,
        amount=Decimal("100"),
        stop_price=Decimal("49000.5"),
        take_profit_price=Decimal("52000"),
    )
    values.update(overrides)
    return BracketRequest(**values)


def test_bracket_is_one_otoco_request_with_opposite_reduce_only_legs():
    method, params = codec.bracket_params(_bracket())
    assert method == "private/buy"
    assert params["linked_order_type"] == "one_triggers_one_cancels_other"
    assert params["trigger_fill_condition"] == "incremental"
    assert params["type"] == "market" and "price" not in params
    assert params["label"] == "tb-b42-entry"
    stop, take = params["otoco_config"]
    assert stop == {
        "direction": "sell",
        "amount": Decimal("100"),
        "type": "stop_market",
        "trigger_price": Decimal("49000.5"),
        "trigger": "mark_price",
        "reduce_only": True,
        "label": "tb-b42-sl",
    }
    assert take["direction"] == "sell" and take["reduce_only"] is True
    assert take["type"] == "take_limit" and take["label"] == "tb-b42-tp"
    assert take["price"] == take["trigger_price"] == Decimal("52000")
    assert "instrument_name" not in stop and "post_only" not in take


def test_short_bracket_sells_and_its_legs_buy():
    method, params = codec.bracket_params(
        _bracket(side=Side.SELL, stop_price=Decimal("51000"), take_profit_price=Decimal("48000"))
    )
    assert method == "private/sell"
    assert {leg["direction"] for leg in params["otoco_config"]} == {"buy"}


def test_limit_entry_and_other_take_profit_types():
    _, params = codec.bracket_params(
        _bracket(entry_type="limit", entry_price=Decimal("50000"), trigger="last_price"),
        take_profit_type="take_market",
    )
    assert params["price"] == Decimal("50000") and params["post_only"] is False
    stop, take = params["otoco_config"]
    assert stop["trigger"] == "last_price" and take["trigger"] == "last_price"
    assert take["type"] == "take_market" and "price" not in take
    _, params = codec.bracket_params(_bracket(), take_profit_type="limit")
    take = params["otoco_config"][1]
    assert take["type"] == "limit" and "trigger_price" not in take and "trigger" not in take
    with pytest.raises(ValueError):
        codec.bracket_params(_bracket(entry_type="limit"))
    with pytest.raises(ValueError):
        codec.bracket_params(_bracket(), take_profit_type="stop_limit")


def test_request_frame_sends_decimals_as_json_numbers():
    _, params = codec.bracket_params(_bracket(amount=Decimal("0.001")))
    frame = json.loads(codec.encode_request(7, "private/buy", params))
    assert frame["jsonrpc"] == "2.0" and frame["id"] == 7 and frame["method"] == "private/buy"
    assert frame["params"]["amount"] == 0.001
    assert frame["params"]["otoco_config"][0]["trigger_price"] == 49000.5


def test_order_params_for_a_reduce_only_stop():
    method, params = codec.order_params(
        OrderRequest(
            instrument="ETH-PERPETUAL",
            side=Side.SELL,
            amount=Decimal("5"),
            order_type="stop_market",
            label="tb-x-sl",
            trigger_price=Decimal("1800.05"),
            reduce_only=True,
        )
    )
    assert method == "private/sell"
    assert params == {
        "instrument_name": "ETH-PERPETUAL",
        "amount": Decimal("5"),
        "type": "stop_market",
        "label": "tb-x-sl",
        "trigger_price": Decimal("1800.05"),
        "trigger": "mark_price",
        "reduce_only": True,
    }
    with pytest.raises(ValueError):
        codec.order_params(
            OrderRequest(
                instrument="ETH-PERPETUAL",
                side=Side.SELL,
                amount=Decimal(1),
                order_type="take_limit",
            )
        )


def test_order_from_deribit_primary_and_secondary():
    primary = codec.order_from_deribit(
        {
            "order_id": "ETH-109559973994",
            "instrument_name": "ETH-PERPETUAL",
            "direction": "buy",
            "order_type": "limit",
            "order_state": "open",
            "amount": 1,
            "filled_amount": 0,
            "average_price": 0,
            "price": 1000,
            "label": "test-123",
            "oto_order_ids": ["ETH-OTO-6910166", "ETH-OTO-6910167"],
            "creation_timestamp": 1700000000000,
        }
    )
    assert primary.average_price is None and primary.price == Decimal("1000")
    assert primary.linked_order_ids == ("ETH-OTO-6910166", "ETH-OTO-6910167")
    assert primary.state is OrderState.OPEN and primary.created_ms == 1700000000000
    secondary = codec.order_from_deribit(
        {
            "order_id": "ETH-OTO-6910166",
            "direction": "sell",
            "order_type": "stop_market",
            "order_state": "untriggered",
            "amount": 1,
            "filled_amount": 0,
            "price": "market_price",
            "trigger_price": 999.1,
            "reduce_only": True,
            "is_secondary_oto": True,
            "primary_order_id": "ETH-109559973994",
        }
    )
    assert secondary.price is None and secondary.trigger_price == Decimal("999.1")
    assert secondary.is_secondary and secondary.primary_order_id == "ETH-109559973994"
    assert secondary.state is OrderState.UNTRIGGERED and secondary.is_live
    rejected = codec.order_from_deribit(
        {"order_id": "1", "direction": "sell", "order_state": "rejected:reduce_direction"}
    )
    assert rejected.state is OrderState.REJECTED


def test_instrument_spec_from_reversed_and_linear():
    btc = codec.instrument_from_deribit(
        {
            "instrument_name": "BTC-PERPETUAL",
            "kind": "future",
            "settlement_period": "perpetual",
            "instrument_type": "reversed",
            "base_currency": "BTC",
            "quote_currency": "USD",
            "settlement_currency": "BTC",
            "contract_size": 10,
            "tick_size": 0.5,
            "min_trade_amount": 10,
            "max_leverage": 50,
            "maker_commission": 0,
            "taker_commission": 0.0005,
        }
    )
    assert btc.kind is InstrumentKind.INVERSE and btc.amount_step == Decimal("10")
    assert btc.tick_size == Decimal("0.5") and btc.taker_fee == Decimal("0.0005")
    usdc = codec.instrument_from_deribit(
        {
            "instrument_name": "BTC_USDC-PERPETUAL",
            "instrument_type": "linear",
            "settlement_currency": "USDC",
            "contract_size": 0.0001,
            "min_trade_amount": 0.0001,
            "tick_size": 1,
            "max_leverage": 50,
        }
    )
    assert usdc.kind is InstrumentKind.LINEAR
    assert usdc.min_amount == usdc.amount_step == Decimal("0.0001")


def test_ticker_position_fill_account_and_candles():
    ticker = codec.ticker_from_deribit(
        {
            "instrument_name": "BTC-PERPETUAL",
            "last_price": 36289.5,
            "mark_price": 36288.31,
            "index_price": 36297.02,
            "best_bid_price": None,
            "best_ask_price": 0,
            "timestamp": 5,
        }
    )
    assert ticker.best_bid is None and ticker.best_ask is None
    assert ticker.mark_price == Decimal("36288.31")
    short = codec.position_from_deribit(
        {"instrument_name": "BTC-PERPETUAL", "size": 50, "direction": "sell", "average_price": 7440}
    )
    assert short.size == Decimal("-50") and short.side is Side.SELL
    fill = codec.fill_from_deribit(
        {
            "trade_id": "ETH-2696083",
            "order_id": "ETH-584849853",
            "instrument_name": "ETH-PERPETUAL",
            "direction": "buy",
            "price": 203.3,
            "amount": 40,
            "fee": 0.00014757,
            "fee_currency": "ETH",
            "liquidity": "T",
            "label": "market0000234",
            "timestamp": 1590483938456,
        }
    )
    assert fill.fee == Decimal("0.00014757") and fill.price == Decimal("203.3")
    account = codec.account_from_deribit(
        {"currency": "BTC", "balance": 1.5, "equity": 1.6, "available_funds": 1.2}
    )
    assert account.equity == Decimal("1.6") and account.initial_margin == 0
    candles = codec.candles_from_chart_data(
        {
            "ticks": [60000, 120000],
            "open": [1, 2],
            "high": [3, 4],
            "low": [0.5, 1.5],
            "close": [2, 3],
            "volume": [10, 20],
            "cost": [1, 2],
            "status": "ok",
        }
    )
    assert [c.open_time_ms for c in candles] == [60000, 120000] and candles[1].high == 4.0
    assert codec.candles_from_chart_data({"status": "no_data"}) == []
    assert codec.resolution_text(1440) == "1D" and codec.resolution_text(5) == "5"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (13004, AuthenticationFailed),
        (13009, AuthenticationFailed),
        (10009, OrderRejected),
        (10043, OrderRejected),
        (-32602, OrderRejected),
        (10004, NotFound),
        (10028, RetryableError),
        (10047, RetryableError),
        (11051, RetryableError),
        (-32601, BrokerError),
        (99999, BrokerError),
    ],
)
def test_error_codes_map_to_typed_exceptions(code, expected):
    exc = error_from_rpc(
        {"code": code, "message": "msg", "data": {"reason": "r"}}, method="private/buy"
    )
    assert type(exc) is expected
    assert exc.code == code and exc.message == "msg" and exc.data == {"reason": "r"}


def test_error_table_covers_the_documented_codes():
    documented = {10000, 10002, 10004, 10009, 10010, 10020, 10021, 10023, 10028, 10040, 10041}
    documented |= {10043, 10044, 10047, 11008, 11029, 11035, 11036, 11044, 11050, 11051, 11054}
    documented |= {13004, 13009, 13020, -32600, -32601, -32602, -32700, -32000, 13901, 13888}
    assert documented <= set(ERRORS)


def test_invalid_params_instrument_not_found_is_not_found():
    exc = error_from_rpc(
        {
            "code": -32602,
            "message": "Invalid params",
            "data": {"reason": "instrument not found", "param": "instrument_name"},
        }
    )
    assert isinstance(exc, NotFound)


def test_error_scrubs_secrets_echoed_by_a_server():
    exc = error_from_rpc(
        {"code": 13004, "message": "invalid_credentials s3cr3t", "data": {"echo": "s3cr3t"}},
        redact=("s3cr3t",),
    )
    assert "s3cr3t" not in str(exc) and "s3cr3t" not in repr(exc.data)


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    delays = backoff_delays(base=1.0, cap=8.0, rng=random.Random(1))
    got = [next(delays) for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for delay, ceiling in zip(got, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    other = backoff_delays(base=1.0, cap=8.0, rng=random.Random(2))
    assert [next(other) for _ in range(6)] != got  # jitter: two clients do not move in step


async def test_token_bucket_lets_a_burst_through_then_paces():
    bucket = TokenBucket(rate=20, burst=3)
    start = time.monotonic()
    waits = [await bucket.acquire() for _ in range(5)]
    elapsed = time.monotonic() - start
    assert waits[:3] == [0.0, 0.0, 0.0] and all(w > 0 for w in waits[3:])
    assert 0.09 <= elapsed < 0.5  # two more tokens at 20/s
