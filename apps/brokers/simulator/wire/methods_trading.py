"""Private trading and account methods, answered by the engine with Deribit's shapes."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from apps.brokers.simulator.records import PlaceResult, SimOrder
from apps.brokers.simulator.wire.errors import ORDER_NOT_FOUND, RpcError, invalid_params
from apps.brokers.simulator.wire.methods_market import (
    currency_param,
    instrument_param,
    kind_param,
)
from apps.brokers.simulator.wire.params import Params
from apps.brokers.simulator.wire.registry import Call, rpc
from apps.brokers.simulator.wire.shapes import account_to_deribit

ORDER_TYPES = (
    "limit",
    "stop_limit",
    "take_limit",
    "market",
    "stop_market",
    "take_market",
    "market_limit",
    "trailing_stop",
)
OPEN_ORDER_TYPES = (
    "all",
    "limit",
    "trigger_all",
    "stop_all",
    "stop_limit",
    "stop_market",
    "take_all",
    "take_limit",
    "take_market",
    "trailing_all",
    "trailing_stop",
)
CANCEL_TYPES = ("all", "limit", "trigger_all", "stop", "take", "trailing_stop")
TIME_IN_FORCE = ("good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel")
TRIGGERS = ("index_price", "mark_price", "last_price")
LINKED = ("one_triggers_other", "one_cancels_other", "one_triggers_one_cancels_other")
FILL_CONDITIONS = ("first_hit", "complete_fill", "incremental")
_ENGINE_OPEN_TYPES = {"trailing_all": None, "trailing_stop": None}


def _engine(call: Call) -> Any:
    return call.server.market.engine


# -- account -----------------------------------------------------------------------------------


@rpc("private/get_account_summary")
def get_account_summary(call: Call) -> dict[str, Any]:
    currency = currency_param(call, allow_any=False)
    call.params.bool("extended")
    if currency not in _engine(call).currencies():
        raise invalid_params("invalid currency", "currency")
    return account_to_deribit(_engine(call).account(currency))


@rpc("private/get_account_summaries")
def get_account_summaries(call: Call) -> dict[str, Any]:
    engine = _engine(call)
    summaries = [account_to_deribit(engine.account(c)) for c in engine.currencies()]
    return {"id": 1, "username": "paper", "type": "main", "summaries": summaries}


@rpc("private/get_positions")
def get_positions(call: Call) -> list[dict[str, Any]]:
    currency = currency_param(call, required=False)
    kind = kind_param(call)
    if kind not in (None, "future", "any"):
        return []
    return [p.to_deribit() for p in _engine(call).positions(currency)]


@rpc("private/get_position")
def get_position(call: Call) -> dict[str, Any]:
    return _engine(call).position(instrument_param(call).name).to_deribit()


# -- placing ------------------------------------------------------------------------------------


def _amount(call: Call, params: Params, contract_size: Decimal, *, required: bool) -> Any:
    amount = params.decimal("amount")
    contracts = params.decimal("contracts")
    if contracts is not None:
        from_contracts = contracts * contract_size
        if amount is not None and amount != from_contracts:
            raise invalid_params("amount and contracts do not match", "contracts")
        amount = from_contracts
    if amount is None and required:
        raise invalid_params("value is required", "amount")
    return amount


def _order_fields(params: Params) -> dict[str, Any]:
    """The optional order parameters the request gives, typed; absent ones are left out."""
    fields: dict[str, Any] = {}
    order_type = params.str("type", choices=ORDER_TYPES)
    if order_type in ("market_limit", "trailing_stop"):
        raise invalid_params("order type not supported by the simulator", "type")
    if order_type is not None:
        fields["type"] = order_type
    for name in ("price", "trigger_price"):
        value = params.decimal(name)
        if value is not None:
            fields[name] = value
    label = params.str("label", max_length=64)
    if label is not None:
        fields["label"] = label
    for name, choices in (("time_in_force", TIME_IN_FORCE), ("trigger", TRIGGERS)):
        value = params.str(name, choices=choices)
        if value is not None:
            fields[name] = value
    for name in ("post_only", "reject_post_only", "reduce_only"):
        flag = params.bool(name)
        if flag is not None:
            fields[name] = flag
    return fields


def _otoco_config(call: Call, contract_size: Decimal) -> list[dict[str, Any]] | None:
    entries = call.params.object_list("otoco_config")
    if entries is None:
        return None
    config = []
    for entry in entries:
        leg = Params(entry)
        fields = _order_fields(leg)
        direction = leg.str("direction", required=True, choices=("buy", "sell"))
        fields["direction"] = direction
        amount = _amount(call, leg, contract_size, required=False)
        if amount is not None:
            fields["amount"] = amount
        config.append(fields)
    return config


def _place(call: Call, direction: str) -> dict[str, Any]:
    spec = instrument_param(call)
    valid_until = call.params.int("valid_until")
    if valid_until is not None and time.time() * 1000 > valid_until:
        raise RpcError(13888)
    amount = _amount(call, call.params, spec.contract_size, required=True)
    fields = _order_fields(call.params)
    linked = call.params.str("linked_order_type", choices=LINKED)
    if linked is not None:
        fields["linked_order_type"] = linked
    condition = call.params.str("trigger_fill_condition", choices=FILL_CONDITIONS)
    if condition is not None:
        fields["trigger_fill_condition"] = condition
    config = _otoco_config(call, spec.contract_size)
    if config is not None:
        fields["otoco_config"] = config
    result = _engine(call).place_order(spec.name, direction, amount, **fields)
    _remember(call, result.order)
    return result.to_deribit()


def _remember(call: Call, order: SimOrder) -> None:
    """Orders created over this connection, for cancel-on-disconnect (linked ones included)."""
    session = call.session
    session.order_ids.add(order.order_id)
    session.order_ids.update(order.oto_order_ids)
    if order.linked_order_type == "one_cancels_other":
        for other in _engine(call).open_orders(order.instrument_name):
            if other.primary_order_id == order.order_id:
                session.order_ids.add(other.order_id)


@rpc("private/buy", matching_engine=True)
def buy(call: Call) -> dict[str, Any]:
    return _place(call, "buy")


@rpc("private/sell", matching_engine=True)
def sell(call: Call) -> dict[str, Any]:
    return _place(call, "sell")


def _edit(call: Call, order_id: str, contract_size: Decimal) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    amount = _amount(call, call.params, contract_size, required=False)
    if amount is not None:
        changes["amount"] = amount
    for name in ("price", "trigger_price"):
        value = call.params.decimal(name)
        if value is not None:
            changes[name] = value
    for name in ("post_only", "reduce_only"):
        flag = call.params.bool(name)
        if flag is not None:
            changes[name] = flag
    result: PlaceResult = _engine(call).edit(order_id, **changes)
    return result.to_deribit()


@rpc("private/edit", matching_engine=True)
def edit(call: Call) -> dict[str, Any]:
    order_id = call.params.str("order_id", required=True)
    assert order_id is not None
    order = _engine(call).get_order(order_id)
    spec = _engine(call).specs[order.instrument_name]
    return _edit(call, order_id, spec.contract_size)


@rpc("private/edit_by_label", matching_engine=True)
def edit_by_label(call: Call) -> dict[str, Any]:
    label = call.params.str("label", required=True)
    spec = instrument_param(call)
    live = [
        order
        for order in _engine(call).orders_by_label(label)
        if order.is_live and order.instrument_name == spec.name
    ]
    if not live:
        raise RpcError(ORDER_NOT_FOUND, data={"param": "label"})
    if len(live) > 1:
        raise RpcError(13032)
    return _edit(call, live[0].order_id, spec.contract_size)


@rpc("private/close_position", matching_engine=True)
def close_position(call: Call) -> dict[str, Any]:
    spec = instrument_param(call)
    order_type = call.params.str("type", required=True, choices=("limit", "market"))
    price = call.params.decimal("price")
    result = _engine(call).close_position(spec.name, order_type, price)
    _remember(call, result.order)
    return result.to_deribit()


# -- cancelling ---------------------------------------------------------------------------------


@rpc("private/cancel", matching_engine=True)
def cancel(call: Call) -> dict[str, Any]:
    order_id = call.params.str("order_id", required=True)
    return _engine(call).cancel(order_id).to_deribit()


@rpc("private/cancel_all", matching_engine=True)
def cancel_all(call: Call) -> int:
    call.params.bool("detailed")
    return _engine(call).cancel_all()


@rpc("private/cancel_all_by_instrument", matching_engine=True)
def cancel_all_by_instrument(call: Call) -> int:
    spec = instrument_param(call)
    order_type = call.params.str("type", default="all", choices=CANCEL_TYPES)
    if order_type == "trailing_stop":
        return 0
    return _engine(call).cancel_all_by_instrument(spec.name, order_type)


def _cancel_filtered(call: Call, currency: str | None, order_type: str) -> int:
    engine = _engine(call)
    if order_type == "all":
        return engine.cancel_all(None if currency == "any" else currency)
    if order_type == "trailing_stop":
        return 0
    engine_type = {"stop": "stop_all", "take": "take_all"}.get(order_type, order_type)
    count = 0
    for order in engine.open_orders(currency=currency, type=engine_type):
        if engine.get_order(order.order_id).is_live:  # an OCO partner may have gone already
            engine.cancel(order.order_id)
            count += 1
    return count


@rpc("private/cancel_all_by_currency", matching_engine=True)
def cancel_all_by_currency(call: Call) -> int:
    currency = currency_param(call)
    kind = kind_param(call)
    order_type = call.params.str("type", default="all", choices=CANCEL_TYPES)
    assert order_type is not None
    if kind not in (None, "future", "any"):
        return 0
    return _cancel_filtered(call, currency, order_type)


@rpc("private/cancel_all_by_kind_or_type", matching_engine=True)
def cancel_all_by_kind_or_type(call: Call) -> int:
    currencies = call.params.raw.get("currency")
    if isinstance(currencies, str):
        currencies = [currencies]
    if not isinstance(currencies, list) or not currencies:
        raise invalid_params("value is required", "currency")
    order_type = call.params.str("type", default="all", choices=CANCEL_TYPES)
    assert order_type is not None
    kind = call.params.str("kind", default="any")
    if kind not in ("future", "any", "all"):
        return 0
    return sum(_cancel_filtered(call, str(currency), order_type) for currency in currencies)


@rpc("private/cancel_by_label", matching_engine=True)
def cancel_by_label(call: Call) -> int:
    label = call.params.str("label", required=True)
    currency = currency_param(call, required=False)
    return _engine(call).cancel_by_label(label, None if currency == "any" else currency)


# -- reading orders and trades -------------------------------------------------------------------


def _open_type(call: Call) -> str | None:
    """The engine's filter for ``type``; None when nothing can match (trailing stops)."""
    order_type = call.params.str("type", default="all", choices=OPEN_ORDER_TYPES)
    assert order_type is not None
    if order_type in _ENGINE_OPEN_TYPES:
        return None
    return order_type


@rpc("private/get_open_orders")
def get_open_orders(call: Call) -> list[dict[str, Any]]:
    kind = kind_param(call)
    order_type = _open_type(call)
    if kind not in (None, "future", "any") or order_type is None:
        return []
    return [o.to_deribit() for o in _engine(call).open_orders(type=order_type)]


@rpc("private/get_open_orders_by_instrument")
def get_open_orders_by_instrument(call: Call) -> list[dict[str, Any]]:
    spec = instrument_param(call)
    order_type = _open_type(call)
    if order_type is None:
        return []
    return [o.to_deribit() for o in _engine(call).open_orders(spec.name, type=order_type)]


@rpc("private/get_open_orders_by_currency")
def get_open_orders_by_currency(call: Call) -> list[dict[str, Any]]:
    currency = currency_param(call)
    kind = kind_param(call)
    order_type = _open_type(call)
    if kind not in (None, "future", "any") or order_type is None:
        return []
    return [o.to_deribit() for o in _engine(call).open_orders(currency=currency, type=order_type)]


@rpc("private/get_open_orders_by_label")
def get_open_orders_by_label(call: Call) -> list[dict[str, Any]]:
    currency = currency_param(call)
    label = call.params.str("label", required=True)
    return [o.to_deribit() for o in _engine(call).open_orders(currency=currency, label=label)]


@rpc("private/get_order_state")
def get_order_state(call: Call) -> dict[str, Any]:
    order_id = call.params.str("order_id", required=True)
    return _engine(call).get_order(order_id).to_deribit()


@rpc("private/get_order_state_by_label")
def get_order_state_by_label(call: Call) -> list[dict[str, Any]]:
    currency = currency_param(call)
    label = call.params.str("label", required=True)
    return [o.to_deribit() for o in _engine(call).orders_by_label(label, currency)]


@rpc("private/get_order_history_by_instrument")
def get_order_history_by_instrument(call: Call) -> list[dict[str, Any]]:
    spec = instrument_param(call)
    count = call.params.int("count", default=20)
    offset = call.params.int("offset", default=0)
    assert count is not None and offset is not None
    if not 1 <= count <= 1000:
        raise invalid_params("must be between 1 and 1000", "count")
    include_unfilled = call.params.bool("include_unfilled", default=False)
    history = _engine(call).order_history(spec.name, include_unfilled=bool(include_unfilled))
    return [o.to_deribit() for o in history[offset : offset + count]]


def _trades_page(call: Call, trades: list[Any]) -> dict[str, Any]:
    count = call.params.int("count", default=10)
    assert count is not None
    if not 1 <= count <= 1000:
        raise invalid_params("must be between 1 and 1000", "count")
    start_seq = call.params.int("start_seq")
    end_seq = call.params.int("end_seq")
    sorting = call.params.str("sorting", default="default", choices=("asc", "desc", "default"))
    call.params.bool("historical")
    if start_seq is not None:
        trades = [t for t in trades if t.trade_seq >= start_seq]
    if end_seq is not None:
        trades = [t for t in trades if t.trade_seq <= end_seq]
    page = trades[:count] if sorting == "asc" else list(reversed(trades))[:count]
    return {"trades": [t.to_deribit() for t in page], "has_more": len(trades) > count}


@rpc("private/get_user_trades_by_instrument")
def get_user_trades_by_instrument(call: Call) -> dict[str, Any]:
    spec = instrument_param(call)
    trades = _engine(call).trades(
        spec.name,
        start_ms=call.params.int("start_timestamp"),
        end_ms=call.params.int("end_timestamp"),
    )
    return _trades_page(call, trades)


@rpc("private/get_user_trades_by_currency")
def get_user_trades_by_currency(call: Call) -> dict[str, Any]:
    currency = currency_param(call)
    kind = kind_param(call)
    if kind not in (None, "future", "any"):
        return {"trades": [], "has_more": False}
    engine = _engine(call)
    names = {
        name for name, spec in engine.specs.items() if currency in ("any", spec.settlement_currency)
    }
    trades = [
        t
        for t in engine.trades(
            start_ms=call.params.int("start_timestamp"), end_ms=call.params.int("end_timestamp")
        )
        if t.instrument_name in names
    ]
    return _trades_page(call, trades)


@rpc("private/get_user_trades_by_order")
def get_user_trades_by_order(call: Call) -> list[dict[str, Any]]:
    order_id = call.params.str("order_id", required=True)
    engine = _engine(call)
    engine.get_order(order_id)
    sorting = call.params.str("sorting", default="default", choices=("asc", "desc", "default"))
    trades = engine.trades(order_id=order_id)
    if sorting == "desc":
        trades = list(reversed(trades))
    return [t.to_deribit() for t in trades]
