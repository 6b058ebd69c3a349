"""Deribit's error answers as the simulator raises them.

``ExchangeError`` carries Deribit's numeric ``code``, its ``message`` name (``"not_enough_funds"``)
and optional ``data`` (``{"reason": ..., "param": ...}`` for -32602). The wire server turns it into
``{"code": ..., "message": ..., "data": ...}``; the paper broker maps it to the ``BrokerError``
subclasses of ``apps.brokers.base`` (see ``apps.brokers.paper``).
"""

from __future__ import annotations

from typing import Any

from apps.brokers.base import BrokerError

QTY_TOO_LOW = 10002
ORDER_NOT_FOUND = 10004
NOT_ENOUGH_FUNDS = 10009
ALREADY_CLOSED = 10010
INVALID_INSTRUMENT = 10020
INVALID_AMOUNT = 10021
INVALID_PRICE = 10023
PRICE_WRONG_TICK = 10043
STOP_PRICE_WRONG_TICK = 10044
ALREADY_FILLED = 11008
OTHER_REJECT = 11030
NO_MORE_TRIGGERS = 11035
INVALID_TRIGGER_PRICE = 11036
NOT_OPEN_ORDER = 11044
POST_ONLY_REJECT = 11054
INVALID_PARAMS = -32602

MESSAGES: dict[int, str] = {
    10000: "authorization_required",
    10001: "error",
    QTY_TOO_LOW: "qty_too_low",
    ORDER_NOT_FOUND: "order_not_found",
    NOT_ENOUGH_FUNDS: "not_enough_funds",
    ALREADY_CLOSED: "already_closed",
    INVALID_INSTRUMENT: "invalid_or_unsupported_instrument",
    INVALID_AMOUNT: "invalid_amount",
    INVALID_PRICE: "invalid_price",
    10028: "too_many_requests",
    10040: "retry",
    10041: "settlement_in_progress",
    PRICE_WRONG_TICK: "price_wrong_tick",
    STOP_PRICE_WRONG_TICK: "stop_price_wrong_tick",
    10047: "matching_engine_queue_full",
    ALREADY_FILLED: "already_filled",
    11029: "invalid_arguments",
    OTHER_REJECT: "other_reject",
    NO_MORE_TRIGGERS: "no_more_triggers",
    INVALID_TRIGGER_PRICE: "invalid_trigger_price",
    NOT_OPEN_ORDER: "not_open_order",
    11050: "bad_request",
    11051: "system_maintenance",
    POST_ONLY_REJECT: "post_only_reject",
    13004: "invalid_credentials",
    13009: "unauthorized",
    13020: "not_found",
    -32600: "Invalid Request",
    -32601: "Method not found",
    INVALID_PARAMS: "Invalid params",
    -32700: "Parse error",
    -32000: "Missing params",
}


class ExchangeError(BrokerError):
    """A Deribit error answer: ``code`` (int), ``message`` (Deribit's name), ``data`` (or None)."""

    code: int

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        super().__init__(message or MESSAGES.get(code, "error"), code=code, data=data)

    def to_deribit(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


def invalid_params(reason: str, param: str) -> ExchangeError:
    """-32602 with Deribit's ``{"reason", "param"}`` data."""
    return ExchangeError(INVALID_PARAMS, "Invalid params", {"reason": reason, "param": param})
