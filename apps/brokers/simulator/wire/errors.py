"""Deribit's error objects: the codes and messages its API v2 answers with.

Names and codes follow Deribit's official error table (reference notes §11). A handler raises
``RpcError``; the server turns it into ``{"code", "message", "data"?}`` inside the envelope.
"""

from __future__ import annotations

from typing import Any

# code -> Deribit's message
MESSAGES: dict[int, str] = {
    10000: "authorization_required",
    10001: "error",
    10002: "qty_too_low",
    10003: "order_overlap",
    10004: "order_not_found",
    10009: "not_enough_funds",
    10010: "already_closed",
    10011: "price_not_allowed",
    10012: "book_closed",
    10020: "invalid_or_unsupported_instrument",
    10021: "invalid_amount",
    10023: "invalid_price",
    10025: "invalid_order_id",
    10028: "too_many_requests",
    10029: "not_owner_of_order",
    10030: "must_be_websocket_request",
    10031: "invalid_args_for_instrument",
    10040: "retry",
    10041: "settlement_in_progress",
    10043: "price_wrong_tick",
    10044: "trigger_price_wrong_tick",
    10047: "matching_engine_queue_full",
    10049: "cancel_on_disconnect_failed",
    11008: "already_filled",
    11029: "invalid_arguments",
    11035: "no_more_triggers",
    11036: "invalid_trigger_price",
    11043: "bad_argument",
    11044: "not_open_order",
    11047: "unsupported_arg_combination",
    11050: "bad_request",
    11051: "system_maintenance",
    11052: "subscribe_error_unsubscribed",
    11054: "post_only_reject",
    11055: "post_only_not_allowed",
    13004: "invalid_credentials",
    13009: "unauthorized",
    13020: "not_found",
    13021: "forbidden",
    13028: "temporarily_unavailable",
    13032: "non_unique_order_label",
    13042: "cod_not_enabled",
    13778: "raw_subscriptions_not_available_for_unauthorized",
    13888: "timed_out",
    13901: "no_more_oto_orders",
    -32000: "Missing params",
    -32600: "Invalid Request",
    -32601: "Method not found",
    -32602: "Invalid params",
    -32700: "Parse error",
}

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INVALID_CREDENTIALS = 13004
UNAUTHORIZED = 13009
MUST_BE_WEBSOCKET = 10030
SYSTEM_MAINTENANCE = 11051
TOO_MANY_REQUESTS = 10028
ORDER_NOT_FOUND = 10004
NOT_OPEN_ORDER = 11044


class RpcError(Exception):
    """An error answer. ``message`` defaults to Deribit's name for the code."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, "error")
        self.data = data
        super().__init__(f"{code} {self.message}")

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(reason: str, param: str) -> RpcError:
    """Deribit's usual validation answer: -32602 with ``data: {reason, param}``."""
    return RpcError(INVALID_PARAMS, data={"reason": reason, "param": param})


def unauthorized() -> RpcError:
    return RpcError(UNAUTHORIZED, data={"reason": "invalid_token"})
