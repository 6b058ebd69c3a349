"""The run API: start, stop, pause, resume, restart, status, events. Thin: one service call each."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from apps.monitoring.api_errors import ApiError
from apps.strategies import selectors, services


def _call(action, **kwargs: Any):
    try:
        return action(**kwargs)
    except services.RunInputError as exc:
        raise ApiError(400, "INVALID_INPUT", str(exc), fields={exc.field: [exc.message]}) from None
    except services.RunConflict as exc:
        raise ApiError(409, exc.code, exc.message) from None


StartBody = inline_serializer(
    "RunStart",
    {
        "strategy": serializers.CharField(),
        "params": serializers.DictField(required=False),
        "instrument": serializers.CharField(),
    },
)


@extend_schema(request=StartBody, responses={201: dict})
@api_view(["POST"])
def strategy_start(request: Request) -> Response:
    """Start THE run (409 if one is active; 400 naming the field for a bad strategy/params)."""
    body = request.data if isinstance(request.data, dict) else {}
    _call(
        services.run_start,
        strategy=body.get("strategy"),
        params=body.get("params"),
        instrument=body.get("instrument"),
        user=request.user,
    )
    return Response(selectors.run_status(), status=201)


@extend_schema(request=None, responses=dict)
@api_view(["POST"])
def strategy_stop(request: Request) -> Response:
    _call(services.run_stop, user=request.user)
    return Response(selectors.run_status())


@extend_schema(request=None, responses=dict)
@api_view(["POST"])
def strategy_pause(request: Request) -> Response:
    _call(services.run_pause, user=request.user)
    return Response(selectors.run_status())


@extend_schema(request=None, responses=dict)
@api_view(["POST"])
def strategy_resume(request: Request) -> Response:
    _call(services.run_resume, user=request.user)
    return Response(selectors.run_status())


@extend_schema(request=None, responses=dict)
@api_view(["POST"])
def strategy_restart(request: Request) -> Response:
    """The only way out of ERROR."""
    _call(services.run_restart, user=request.user)
    return Response(selectors.run_status())


@extend_schema(responses=dict)
@api_view(["GET"])
def strategy_status(request: Request) -> Response:
    return Response(selectors.run_status())


@extend_schema(responses=dict)
@api_view(["GET"])
def events(request: Request) -> Response:
    try:
        limit = int(request.query_params.get("limit", 100))
        run_id = request.query_params.get("run")
        run_id = int(run_id) if run_id else None
    except ValueError:
        raise ApiError(400, "INVALID_INPUT", "limit and run are numbers") from None
    rows = selectors.events(run_id=run_id, kind=request.query_params.get("kind"), limit=limit)
    return Response(
        {
            "events": [
                {
                    "id": e.id,
                    "at": e.created_at.isoformat(),
                    "kind": e.kind,
                    "level": e.level,
                    "message": e.message,
                    "context": e.context,
                    "run_id": e.run_id,
                    "bracket_id": e.bracket_id,
                }
                for e in rows
            ]
        }
    )
