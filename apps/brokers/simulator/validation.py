"""Checks of order parameters, with Deribit's error codes (pure functions of a book and params).

``validate_order`` turns raw buy/sell parameters into typed fields or raises ``ExchangeError``:
-32602 for a missing or bad parameter, 10002 below the minimum amount, 10021 not a multiple of the
contract size, 10023 a price ≤ 0, 10043 / 10044 a price / trigger price off the tick.
``check_live_order`` adds the checks of an order that goes to work now: 11036 a trigger on the
wrong side of its price, 11054 a post-only order that would take, 11030 a reduce-only order that
cannot reduce the position.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .book import Book
from .errors import (
    INVALID_AMOUNT,
    INVALID_PRICE,
    INVALID_TRIGGER_PRICE,
    OTHER_REJECT,
    POST_ONLY_REJECT,
    PRICE_WRONG_TICK,
    QTY_TOO_LOW,
    STOP_PRICE_WRONG_TICK,
    ExchangeError,
    invalid_params,
)
from .orders import (
    MARKET_STYLE,
    ORDER_TYPES,
    OTOCO,
    TIME_IN_FORCE,
    TRIGGER_ORDER_TYPES,
    TRIGGERS,
    to_decimal,
)


def validate_order(book: Book, raw: Mapping[str, Any]) -> dict[str, Any]:
    spec = book.spec
    order_type = raw.get("type") or "limit"
    if order_type not in ORDER_TYPES:
        raise invalid_params("invalid value", "type")
    if raw.get("amount") is None:
        raise invalid_params("value is required", "amount")
    amount = to_decimal(raw["amount"], "amount")
    check_amount(book, amount)
    price = None
    if order_type not in MARKET_STYLE:
        if raw.get("price") is None:
            raise invalid_params("value is required", "price")
        price = to_decimal(raw["price"], "price")
        if price <= 0:
            raise ExchangeError(
                INVALID_PRICE, data={"reason": "must be positive", "param": "price"}
            )
        if price % spec.tick_size:
            raise ExchangeError(PRICE_WRONG_TICK, data={"param": "price"})
    trigger_price = None
    trigger = None
    if order_type in TRIGGER_ORDER_TYPES:
        if raw.get("trigger_price") is None:
            raise invalid_params("value is required", "trigger_price")
        trigger_price = to_decimal(raw["trigger_price"], "trigger_price")
        if trigger_price <= 0:
            raise ExchangeError(
                INVALID_PRICE, data={"reason": "must be positive", "param": "trigger_price"}
            )
        if trigger_price % spec.tick_size:
            raise ExchangeError(STOP_PRICE_WRONG_TICK, data={"param": "trigger_price"})
        trigger = raw.get("trigger")
        if trigger is None:
            raise invalid_params("value is required", "trigger")
        if trigger not in TRIGGERS:
            raise invalid_params("invalid value", "trigger")
    label = raw.get("label") or ""
    if not isinstance(label, str) or len(label) > 64:
        raise invalid_params("label must be a string of at most 64 characters", "label")
    tif = raw.get("time_in_force") or "good_til_cancelled"
    if tif not in TIME_IN_FORCE:
        raise invalid_params("invalid value", "time_in_force")
    post_only = bool(raw.get("post_only") or False)
    if post_only and order_type != "limit" and order_type not in ("stop_limit", "take_limit"):
        raise ExchangeError(11055, "post_only_not_allowed", {"param": "post_only"})
    return {
        "type": order_type,
        "amount": amount,
        "price": price,
        "trigger_price": trigger_price,
        "trigger": trigger,
        "label": label,
        "time_in_force": tif,
        "post_only": post_only,
        "reject_post_only": bool(raw.get("reject_post_only") or False),
        "reduce_only": bool(raw.get("reduce_only") or False),
    }


def validate_config(
    book: Book,
    raw: Mapping[str, Any],
    primary: dict[str, Any],
    primary_is_buy: bool,
    linked_order_type: str,
) -> tuple[bool, dict[str, Any]]:
    if not isinstance(raw, Mapping):
        raise invalid_params("invalid value", "otoco_config")
    direction = raw.get("direction")
    if direction is None:
        raise invalid_params("value is required", "direction")
    if direction not in ("buy", "sell"):
        raise invalid_params("invalid value", "direction")
    is_buy = direction == "buy"
    if linked_order_type == OTOCO and is_buy == primary_is_buy:
        raise invalid_params("different orders directions are required", "otoco_config")
    merged = dict(raw)
    merged.setdefault("amount", primary["amount"])
    merged.setdefault("type", "limit")
    if raw.get("instrument_name") not in (None, book.name):
        raise invalid_params("invalid value", "instrument_name")
    return is_buy, validate_order(book, merged)


def check_amount(book: Book, amount: Decimal) -> None:
    spec = book.spec
    if amount <= 0:
        raise ExchangeError(INVALID_AMOUNT, data={"reason": "must be positive", "param": "amount"})
    if amount < spec.min_amount:
        raise ExchangeError(
            QTY_TOO_LOW, data={"reason": f"minimum is {spec.min_amount}", "param": "amount"}
        )
    if amount % spec.amount_step:
        raise ExchangeError(
            INVALID_AMOUNT,
            data={"reason": "must be a multiple of contract size", "param": "amount"},
        )


def check_live_order(book: Book, is_buy: bool, fields: dict[str, Any]) -> None:
    """Checks of an order that goes to work now: trigger side, post-only, reduce-only."""
    order_type = fields["type"]
    if fields["trigger_price"] is not None:
        ref = {"mark_price": book.mark, "index_price": book.index}.get(fields["trigger"], book.last)
        trigger = float(fields["trigger_price"])
        rising = is_buy == order_type.startswith("stop")
        if (rising and trigger <= ref) or (not rising and trigger >= ref):
            raise ExchangeError(
                INVALID_TRIGGER_PRICE,
                data={
                    "reason": "trigger price on the wrong side of the price",
                    "param": "trigger_price",
                },
            )
    elif fields["post_only"] and order_type == "limit":
        price = float(fields["price"])
        if (is_buy and price >= book.last) or (not is_buy and price <= book.last):
            raise ExchangeError(POST_ONLY_REJECT, data={"param": "post_only"})
    if fields["reduce_only"] and fields["trigger_price"] is None:
        reduces = book.size < 0 if is_buy else book.size > 0
        if not reduces:
            raise ExchangeError(OTHER_REJECT, "other_reject reduce_only", {"reason": "reduce_only"})
