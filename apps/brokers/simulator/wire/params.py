"""Typed reading of a request's ``params`` with Deribit's -32602 answers.

Params arrive either from JSON (numbers already ``Decimal`` because the server parses floats
that way, so ``0.001`` stays exact) or from an HTTP query string (every value a string, booleans
as ``true``/``false``). Each getter accepts both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from apps.brokers.simulator.wire.errors import invalid_params

_MISSING = object()


class Params:
    def __init__(self, raw: Mapping[str, Any], *, from_query: bool = False) -> None:
        self.raw = raw
        self.from_query = from_query

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def _get(self, name: str, required: bool) -> Any:
        value = self.raw.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise invalid_params("value is required", name)
            return _MISSING
        return value

    def str(
        self,
        name: str,
        *,
        required: bool = False,
        default: str | None = None,
        choices: Iterable[str] | None = None,
        max_length: int | None = None,
    ) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise invalid_params("must be a string", name)
        if choices is not None:
            allowed = tuple(choices)
            if value not in allowed:
                raise invalid_params(f"must be one of: {', '.join(allowed)}", name)
        if max_length is not None and len(value) > max_length:
            raise invalid_params(f"must be at most {max_length} characters", name)
        return value

    def decimal(
        self, name: str, *, required: bool = False, default: Decimal | None = None
    ) -> Decimal | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        return to_decimal(value, name)

    def int(self, name: str, *, required: bool = False, default: int | None = None) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        number = to_decimal(value, name)
        if number != number.to_integral_value():
            raise invalid_params("must be an integer", name)
        return int(number)

    def bool(self, name: str, *, default: bool | None = None) -> bool | None:
        value = self._get(name, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        raise invalid_params("must be a boolean", name)

    def str_list(self, name: str, *, required: bool = False) -> list[str]:
        value = self._get(name, required)
        if value is _MISSING:
            return []
        if isinstance(value, str) and self.from_query:
            value = [part for part in value.split(",") if part]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise invalid_params("must be an array of strings", name)
        return value

    def object_list(self, name: str) -> list[dict[str, Any]] | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if isinstance(value, str) and self.from_query:
            # a query string can carry nested parameters only as JSON text
            try:
                value = json.loads(value, parse_float=Decimal)
            except ValueError:
                raise invalid_params("must be an array of objects", name) from None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise invalid_params("must be an array of objects", name)
        return value


def to_decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool):
        raise invalid_params("must be a number", name)
    if isinstance(value, Decimal | int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise invalid_params("must be a number", name) from None
    else:
        raise invalid_params("must be a number", name)
    if not number.is_finite():
        raise invalid_params("must be a number", name)
    return number
