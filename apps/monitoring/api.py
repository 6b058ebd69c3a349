from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from .health import readiness


@extend_schema(
    responses=inline_serializer(
        "Me", {"username": serializers.CharField(), "is_staff": serializers.BooleanField()}
    )
)
@api_view(["GET"])
def me(request: Request) -> Response:
    """Who the caller is (session or token)."""
    return Response({"username": request.user.get_username(), "is_staff": request.user.is_staff})


@extend_schema(
    responses=inline_serializer(
        "Readiness", {"ok": serializers.BooleanField(), "checks": serializers.DictField()}
    )
)
@api_view(["GET"])
def system_status(request: Request) -> Response:
    """Database, Redis, workers and beat, each ok or failing with a reason."""
    return Response(readiness())
