"""Deribit API v2 messages: JSON-RPC frames in and out, and Deribit objects <-> our value types.

Pure Python, no Django, no I/O. Numbers arrive as JSON floats and become ``Decimal`` through
their shortest text form (``Decimal(str(x))``), so ``0.1`` stays ``Decimal("0.1")``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from apps.brokers.base import (
    AccountSummary,
    BracketRequest,
    Candle,
    Fill,
    InstrumentKind,
    InstrumentSpec,
    Order,
    OrderRequest,
    OrderState,
    Position,
    Side,
    Ticker,
)

LINKED_ORDER_TYPE = "one_triggers_one_cancels_other"
TRIGGER_FILL_CONDITION = "incremental"
TAKE_PROFIT_TYPES = ("take_limit", "take_market", "limit")
MARKET_TYPES = frozenset({"market", "stop_market", "take_market"})
TRIGGER_TYPES = frozenset({"stop_market", "stop_limit", "take_market", "take_limit"})


# --- frames ---------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # A JSON number; float's shortest repr of a tick-rounded Decimal is the same digits.
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_request(request_id: int, method: str, params: dict[str, Any] | None = None) -> str:
    """One request as JSON text (orjson: about ten times faster than the standard library on
    an order's parameters; this is on the path from a candle to the exchange)."""
    request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
    try:
        return orjson.dumps(request, default=_json_default).decode()
    except TypeError:  # what orjson does not write (integers above 64 bits): the standard way
        return json.dumps(request, default=_json_default, separators=(",", ":"))


def decode_message(text: str | bytes) -> dict[str, Any]:
    """A message from Deribit (orjson; it raises ``ValueError`` on what is not JSON)."""
    message = orjson.loads(text)
    if not isinstance(message, dict):
        raise ValueError("a Deribit message is a JSON object")
    return message


# --- numbers --------------------------------------------------------------------------------


def dec(value: Any) -> Decimal:
    """A Deribit number as Decimal (``None``/missing -> 0)."""
    if value is None or value == "":
        return Decimal("0")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    return Decimal(str(value))


def dec_or_none(value: Any) -> Decimal | None:
    """A price that may be absent or the string ``"market_price"`` (trigger-market orders)."""
    if value is None or (isinstance(value, str) and not _is_number(value)):
        return None
    return dec(value)


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


# --- objects in -----------------------------------------------------------------------------


def order_from_deribit(data: dict[str, Any]) -> Order:
    filled = dec(data.get("filled_amount"))
    average = dec_or_none(data.get("average_price"))
    if average is not None and average == 0 and filled == 0:
        average = None  # Deribit reports 0 until the first fill
    trigger_price = dec_or_none(data.get("trigger_price"))
    state_text = str(data.get("order_state", "open"))
    # Deribit's trigger history may say "rejected:reduce_direction"; keep the state, not the reason.
    state = OrderState(state_text.split(":", 1)[0])
    primary = data.get("primary_order_id")
    return Order(
        order_id=str(data["order_id"]),
        instrument=str(data.get("instrument_name", "")),
        direction=Side(data["direction"]),
        order_type=str(data.get("order_type", "")),
        amount=dec(data.get("amount")),
        filled_amount=filled,
        state=state,
        label=str(data.get("label") or ""),
        price=dec_or_none(data.get("price")),
        trigger_price=trigger_price if trigger_price else None,
        average_price=average,
        reduce_only=bool(data.get("reduce_only", False)),
        primary_order_id=str(primary) if primary else None,
        linked_order_ids=tuple(str(x) for x in data.get("oto_order_ids") or ()),
        is_secondary=bool(data.get("is_secondary_oto", False)),
        cancel_reason=data.get("cancel_reason") or None,
        created_ms=int(data.get("creation_timestamp") or 0),
        updated_ms=int(data.get("last_update_timestamp") or 0),
    )


def fill_from_deribit(data: dict[str, Any]) -> Fill:
    return Fill(
        trade_id=str(data["trade_id"]),
        order_id=str(data.get("order_id", "")),
        instrument=str(data.get("instrument_name", "")),
        direction=Side(data["direction"]),
        price=dec(data.get("price")),
        amount=dec(data.get("amount")),
        fee=dec(data.get("fee")),
        fee_currency=str(data.get("fee_currency") or ""),
        liquidity=str(data.get("liquidity") or ""),
        label=str(data.get("label") or ""),
        timestamp_ms=int(data.get("timestamp") or 0),
    )


def position_from_deribit(data: dict[str, Any]) -> Position:
    size = dec(data.get("size"))
    # Deribit reports a short with a negative size; keep it signed even if a payload does not.
    if data.get("direction") == "sell" and size > 0:
        size = -size
    return Position(
        instrument=str(data.get("instrument_name", "")),
        size=size,
        average_price=dec(data.get("average_price")),
        mark_price=dec(data.get("mark_price")),
        floating_pnl=dec(data.get("floating_profit_loss")),
        realized_pnl=dec(data.get("realized_profit_loss")),
    )


def instrument_from_deribit(data: dict[str, Any]) -> InstrumentSpec:
    instrument_type = data.get("instrument_type") or data.get("future_type")
    kind = InstrumentKind.INVERSE if instrument_type == "reversed" else InstrumentKind.LINEAR
    contract_size = dec(data.get("contract_size"))
    return InstrumentSpec(
        name=str(data["instrument_name"]),
        kind=kind,
        base_currency=str(data.get("base_currency", "")),
        quote_currency=str(data.get("quote_currency", "")),
        settlement_currency=str(data.get("settlement_currency", "")),
        contract_size=contract_size,
        min_amount=dec(data.get("min_trade_amount")),
        amount_step=contract_size,
        tick_size=dec(data.get("tick_size")),
        max_leverage=dec(data.get("max_leverage")),
        maker_fee=dec(data.get("maker_commission")),
        taker_fee=dec(data.get("taker_commission")),
    )


def is_perpetual(data: dict[str, Any]) -> bool:
    return data.get("settlement_period") == "perpetual" or str(
        data.get("instrument_name", "")
    ).endswith("-PERPETUAL")


def ticker_from_deribit(data: dict[str, Any]) -> Ticker:
    def side(value: Any) -> Decimal | None:
        price = dec_or_none(value)
        return price if price else None  # null or 0 when that side of the book is empty

    return Ticker(
        instrument=str(data.get("instrument_name", "")),
        last_price=dec(data.get("last_price")),
        mark_price=dec(data.get("mark_price")),
        index_price=dec(data.get("index_price")),
        best_bid=side(data.get("best_bid_price")),
        best_ask=side(data.get("best_ask_price")),
        timestamp_ms=int(data.get("timestamp") or 0),
    )


def account_from_deribit(data: dict[str, Any]) -> AccountSummary:
    return AccountSummary(
        currency=str(data.get("currency", "")),
        balance=dec(data.get("balance")),
        equity=dec(data.get("equity")),
        available_funds=dec(data.get("available_funds")),
        initial_margin=dec(data.get("initial_margin")),
        maintenance_margin=dec(data.get("maintenance_margin")),
    )


def candles_from_chart_data(data: dict[str, Any]) -> list[Candle]:
    """``public/get_tradingview_chart_data`` parallel arrays -> candles (``no_data`` -> [])."""
    if data.get("status") == "no_data":
        return []
    ticks = data.get("ticks") or []
    volumes = data.get("volume") or [0.0] * len(ticks)
    return [
        Candle(
            open_time_ms=int(tick),
            open=float(o),
            high=float(h),
            low=float(lo),
            close=float(c),
            volume=float(v or 0.0),
        )
        for tick, o, h, lo, c, v in zip(
            ticks, data["open"], data["high"], data["low"], data["close"], volumes, strict=False
        )
    ]


def candle_from_chart_update(data: dict[str, Any]) -> Candle:
    """One ``chart.trades.{instrument}.{resolution}`` notification (the forming candle)."""
    return Candle(
        open_time_ms=int(data["tick"]),
        open=float(data["open"]),
        high=float(data["high"]),
        low=float(data["low"]),
        close=float(data["close"]),
        volume=float(data.get("volume") or 0.0),
    )


def resolution_text(resolution_minutes: int) -> str:
    return "1D" if resolution_minutes == 1440 else str(resolution_minutes)


# --- requests out ---------------------------------------------------------------------------


def order_params(request: OrderRequest) -> tuple[str, dict[str, Any]]:
    """``private/buy`` or ``private/sell`` and its parameters for a single order."""
    params: dict[str, Any] = {
        "instrument_name": request.instrument,
        "amount": request.amount,
        "type": request.order_type,
    }
    if request.label:
        params["label"] = request.label
    if request.price is not None and request.order_type not in MARKET_TYPES:
        params["price"] = request.price
    if request.order_type in TRIGGER_TYPES:
        if request.trigger_price is None:
            raise ValueError(f"a {request.order_type} order needs a trigger_price")
        params["trigger_price"] = request.trigger_price
        params["trigger"] = request.trigger or "mark_price"
    if request.reduce_only:
        params["reduce_only"] = True
    if request.order_type == "limit":
        params["post_only"] = False  # an entry at a price must not be repriced away from it
    return f"private/{request.side.value}", params


def bracket_params(
    request: BracketRequest, *, take_profit_type: str = "take_limit"
) -> tuple[str, dict[str, Any]]:
    """The ONE request that places entry, stop-loss and take-profit as a Deribit OTOCO set.

    The secondaries trade the opposite direction, are reduce-only, and ``incremental`` places a
    pro-rata part of them on every partial fill of the entry.
    """
    if take_profit_type not in TAKE_PROFIT_TYPES:
        raise ValueError(f"take_profit_type must be one of {TAKE_PROFIT_TYPES}")
    if request.entry_type not in ("market", "limit"):
        raise ValueError("entry_type must be market or limit")
    entry_label, stop_label, tp_label = request.labels
    exit_side = request.side.opposite.value
    params: dict[str, Any] = {
        "instrument_name": request.instrument,
        "amount": request.amount,
        "type": request.entry_type,
        "label": entry_label,
        "linked_order_type": LINKED_ORDER_TYPE,
        "trigger_fill_condition": TRIGGER_FILL_CONDITION,
    }
    if request.entry_type == "limit":
        if request.entry_price is None:
            raise ValueError("a limit entry needs entry_price")
        params["price"] = request.entry_price
        params["post_only"] = False
    stop = {
        "direction": exit_side,
        "amount": request.amount,
        "type": "stop_market",
        "trigger_price": request.stop_price,
        "trigger": request.trigger,
        "reduce_only": True,
        "label": stop_label,
    }
    take: dict[str, Any] = {
        "direction": exit_side,
        "amount": request.amount,
        "type": take_profit_type,
        "reduce_only": True,
        "label": tp_label,
    }
    if take_profit_type != "take_market":
        take["price"] = request.take_profit_price
    if take_profit_type != "limit":
        take["trigger_price"] = request.take_profit_price
        take["trigger"] = request.trigger
    params["otoco_config"] = [stop, take]
    return f"private/{request.side.value}", params
