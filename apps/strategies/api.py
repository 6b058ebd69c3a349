"""The strategy catalogue API: list the strategies and show one. Thin: the registry answers."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from apps.monitoring.api_errors import ApiError
from apps.strategies import registry


@extend_schema(operation_id="strategies_list", responses=dict)
@api_view(["GET"])
def strategy_list(request: Request) -> Response:
    """Every strategy of the library: id, name, description, timeframe, warm-up, parameters."""
    return Response({"strategies": registry.list_strategies()})


@extend_schema(operation_id="strategies_detail", responses=dict)
@api_view(["GET"])
def strategy_detail(request: Request, strategy_id: str) -> Response:
    """One strategy's catalogue entry; 404 NOT_FOUND for an unknown id."""
    try:
        cls = registry.strategy_class(strategy_id)
    except registry.UnknownStrategy as exc:
        raise ApiError(404, "NOT_FOUND", str(exc)) from None
    return Response(cls.describe())
