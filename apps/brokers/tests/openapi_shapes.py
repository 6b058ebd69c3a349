"""Check simulator answers against Deribit's own OpenAPI description (v2.1.1).

The description lives outside the project (``/work/shared/reference``); tests that use it skip
when it is absent. ``shape_errors`` is a small JSON-schema subset: ``$ref``, ``type``,
``nullable``, ``required``, ``properties``, ``items``, ``enum``, ``allOf``/``oneOf``/``anyOf``.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

OPENAPI = Path(
    os.environ.get("DERIBIT_OPENAPI", "/work/shared/reference/deribit-openapi-2.1.1.json")
)


@functools.cache
def _document() -> dict[str, Any]:
    if not OPENAPI.is_file():
        pytest.skip(f"Deribit OpenAPI description not found at {OPENAPI}")
    return json.loads(OPENAPI.read_text())


def _resolve(node: Any) -> Any:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 20:
        target: Any = _document()
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
        seen += 1
    return node


def result_schema(method: str) -> dict[str, Any]:
    """The schema of ``result`` in the 200 answer of ``method`` (``"private/buy"``)."""
    path = _document()["paths"][f"/{method}"]
    response = _resolve(path["get"]["responses"]["200"])
    schema = _resolve(response["content"]["application/json"]["schema"])
    # a few methods (get_user_trades_by_order) describe no result at all: nothing to check
    return _resolve(schema.get("properties", {}).get("result", {}))


_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


# Where the description and Deribit's real payloads disagree, the payloads win (reference notes
# §5.2-§5.4, §9): a trade's matching_id is "always null"; its reduce_only / post_only are booleans
# (typed string in the description); tick_size_steps is an array (typed object).
QUIRKS = (".matching_id", ".reduce_only", ".post_only", ".tick_size_steps")


def shape_errors(value: Any, schema: Any, path: str = "result") -> list[str]:
    if path.endswith(QUIRKS) and (value is None or isinstance(value, bool | list)):
        return []
    schema = _resolve(schema)
    if not isinstance(schema, dict):
        return []
    for combinator in ("allOf",):
        if combinator in schema:
            return [e for part in schema[combinator] for e in shape_errors(value, part, path)]
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            options = [shape_errors(value, part, path) for part in schema[combinator]]
            return [] if any(not o for o in options) else options[0]
    if value is None:
        # Deribit documents estimated_liquidation_price as a number and sends null
        nullable = schema.get("nullable") or path.endswith(".estimated_liquidation_price")
        return [] if nullable or "type" not in schema else [f"{path} is null"]
    errors: list[str] = []
    expected = schema.get("type")
    if expected in _TYPES:
        allowed = _TYPES[expected]
        # Deribit itself sends "market_price" where a number is documented
        market_price = path.endswith(".price") and value == "market_price"
        if isinstance(value, bool) and expected != "boolean":
            errors.append(f"{path}: boolean where {expected} expected")
        elif not isinstance(value, allowed) and not market_price:
            errors.append(f"{path}: {type(value).__name__} where {expected} expected")
    if "enum" in schema and isinstance(value, str | int) and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{path}.{key} is missing")
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                errors.extend(shape_errors(value[key], sub, f"{path}.{key}"))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors.extend(shape_errors(item, schema["items"], f"{path}[{index}]"))
    return errors


def assert_deribit_shape(method: str, result: Any) -> None:
    errors = shape_errors(result, result_schema(method))
    assert not errors, f"{method} answer differs from Deribit's OpenAPI: {errors}"
