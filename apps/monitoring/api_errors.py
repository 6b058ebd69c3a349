"""One JSON shape for every API error: ``{"error": {"code", "message", "fields"}}``."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """Raise from a view: ``raise ApiError(409, "RUN_ACTIVE", "A run is already active")``."""

    def __init__(
        self, status_code: int, code: str, message: str, fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.fields = fields or {}


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, list):
        return (
            [str(item) for item in detail]
            if all(not isinstance(i, dict | list) for i in detail)
            else [_flatten(i) for i in detail]
        )
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    return [str(detail)]


_CODES = {
    status.HTTP_400_BAD_REQUEST: "INVALID_INPUT",
    status.HTTP_401_UNAUTHORIZED: "NOT_AUTHENTICATED",
    status.HTTP_403_FORBIDDEN: "PERMISSION_DENIED",
    status.HTTP_404_NOT_FOUND: "NOT_FOUND",
    status.HTTP_405_METHOD_NOT_ALLOWED: "METHOD_NOT_ALLOWED",
    status.HTTP_409_CONFLICT: "CONFLICT",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "UNSUPPORTED_MEDIA_TYPE",
    status.HTTP_429_TOO_MANY_REQUESTS: "THROTTLED",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(error_body(exc.error_code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = _CODES.get(response.status_code, "ERROR")
    fields: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            fields = {k: v for k, v in _flatten(detail).items() if k != "non_field_errors"}
            non_field = detail.get("non_field_errors")
            message = str(non_field[0]) if non_field else "Invalid input: " + ", ".join(fields)
        else:
            message = "; ".join(_flatten(detail)) if isinstance(detail, list) else str(detail)
    else:
        message = str(getattr(exc, "detail", exc))
    response.data = error_body(code, message, fields)
    return response


def json_error(
    status_code: int, code: str, message: str, fields: dict | None = None
) -> JsonResponse:
    """The same shape from plain Django views and middleware."""
    return JsonResponse(error_body(code, message, fields), status=status_code)
