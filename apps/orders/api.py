"""Trades and the current bracket, read-only."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from apps.monitoring.api_errors import ApiError
from apps.orders import selectors


@extend_schema(responses=dict)
@api_view(["GET"])
def trades(request: Request) -> Response:
    try:
        limit = int(request.query_params.get("limit", 100))
        run_id = request.query_params.get("run")
        run_id = int(run_id) if run_id else None
    except ValueError:
        raise ApiError(400, "INVALID_INPUT", "limit and run are numbers") from None
    rows = selectors.trades(run_id=run_id, limit=limit).select_related("bracket")
    return Response(
        {
            "trades": [selectors.trade_dict(t) for t in rows],
            "summary": selectors.trades_summary(run_id=run_id),
        }
    )


@extend_schema(responses=dict)
@api_view(["GET"])
def current_bracket(request: Request) -> Response:
    """The live bracket (entry, stop, target with their exchange ids and states), or null."""
    return Response({"bracket": selectors.current_bracket()})
