"""JSON in and out, and Deribit's envelope (``usIn``, ``usOut``, ``usDiff``, ``testnet``).

Incoming floats are parsed as ``Decimal`` so amounts such as ``0.001`` reach the engine exactly;
outgoing ``Decimal`` values become JSON numbers (integers when whole), as Deribit sends them.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import orjson

from apps.brokers.simulator.wire.errors import PARSE_ERROR, RpcError


def now_us() -> int:
    return time.time_ns() // 1000


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise RpcError(PARSE_ERROR) from None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and abs(value) < 10**15:
            return int(value)
        return float(value)
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(message: Any) -> str:
    """``message`` as compact JSON text (orjson, falling back to the standard library for what
    orjson does not write: integers above 64 bits)."""
    try:
        return orjson.dumps(message, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(message, default=_default, separators=(",", ":"))


def result_message(request_id: Any, result: Any, *, us_in: int, testnet: bool) -> dict[str, Any]:
    us_out = now_us()
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": result,
        "usIn": us_in,
        "usOut": us_out,
        "usDiff": us_out - us_in,
        "testnet": testnet,
    }


def error_message(request_id: Any, error: RpcError, *, us_in: int, testnet: bool) -> dict[str, Any]:
    us_out = now_us()
    message: dict[str, Any] = {"jsonrpc": "2.0"}
    if request_id is not None:
        message["id"] = request_id
    message.update(
        {
            "error": error.as_dict(),
            "usIn": us_in,
            "usOut": us_out,
            "usDiff": us_out - us_in,
            "testnet": testnet,
        }
    )
    return message


def notification(channel: str, data: Any, label: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"channel": channel, "data": data}
    if label:
        params["label"] = label
    return {"jsonrpc": "2.0", "method": "subscription", "params": params}


def heartbeat(kind: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": kind}}
