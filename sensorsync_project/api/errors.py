"""One error shape for every API answer: ``{"error": code, "message": sentence, "fields": {...}}``."""

import logging
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from sensorsync_project.database import database_unavailable
from sensorsync_project.exceptions import PreconditionFailed, SensorNotFound, StateConflict

from .parsers import PayloadTooLarge

logger = logging.getLogger("sensorsync.api")

_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}
_CODES[PayloadTooLarge] = "payload_too_large"


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return body


def error_response(status_code: int, code: str, message: str, fields: dict | None = None, **headers) -> JsonResponse:
    """For the plain Django views (agent endpoints, handlers) that sit outside DRF."""
    response = JsonResponse(error_body(code, message, fields), status=status_code)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = "non_field_errors" if key in ("non_field_errors", "__all__") else f"{prefix}{key}"
            out.update(_flatten(value, f"{name}."))
        return out
    if isinstance(detail, list) and detail and not isinstance(detail[0], (dict, list)):
        return {prefix.rstrip(".") or "body": [str(item) for item in detail]}
    if isinstance(detail, list):
        out = {}
        for index, item in enumerate(detail):
            out.update(_flatten(item, f"{prefix.rstrip('.')}[{index}]."))
        return out
    return {prefix.rstrip(".") or "body": [str(detail)]}


def validation_fields(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {("non_field_errors" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
    return {"non_field_errors": exc.messages}


def validation_message(fields: dict[str, list[str]]) -> str:
    parts = [f"{name}: {messages[0]}" for name, messages in list(fields.items())[:3]]
    more = len(fields) - 3
    return "Invalid input. " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = _domain_error_response(exc)
    if response is not None:
        return response
    if isinstance(exc, (DatabaseError, InterfaceError)):
        return _database_error_response(exc)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        response.data = error_body("validation_error", validation_message(fields), fields)
    elif isinstance(exc, exceptions.APIException):
        code = _CODES.get(type(exc)) or exc.default_code
        response.data = error_body(code, str(exc.detail))
    return response


def _domain_error_response(exc: Exception) -> Response | None:
    """The answer to what the services and Django raise that DRF does not know: invalid input, a stale
    ``If-Match``, a missing row."""
    if isinstance(exc, DjangoValidationError):
        fields = validation_fields(exc)
        return Response(error_body("validation_error", validation_message(fields), fields), status=400)
    if isinstance(exc, PreconditionFailed):
        return Response(error_body("precondition_failed", str(exc)), status=412, headers={"ETag": exc.current_etag})
    if isinstance(exc, SensorNotFound):
        return Response(error_body("not_found", str(exc)), status=404)
    if isinstance(exc, StateConflict):
        return Response(error_body(exc.code, str(exc)), status=409)
    if isinstance(exc, (Http404, ObjectDoesNotExist)):
        return Response(error_body("not_found", "Not found."), status=404)
    return None


def _database_error_response(exc: DatabaseError | InterfaceError) -> Response | None:
    """A value the database refused (400), a race lost to a concurrent writer (409), or the database away or busy
    (503); None for a statement it refused, which is a server fault, logged and answered as one."""
    if isinstance(exc, DataError):
        # The database refused a value as invalid for its type: the request's fault, not the database's.
        logger.warning("data error answered 400: %s", exc)
        return Response(error_body("invalid_value", "A value in the request cannot be stored."), status=400)
    if isinstance(exc, IntegrityError):
        # A concurrent writer won a race the service's checks could not see (e.g. the same new name).
        logger.warning("integrity error answered 409: %s", exc)
        return Response(error_body("conflict", "A concurrent change conflicted with this one; retry."), status=409)
    if not database_unavailable(exc):
        return None
    logger.warning("database unavailable: %s", exc)
    return Response(
        error_body("database_unavailable", "The database is unavailable; nothing was written. Retry later."),
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def handler404(request, exception=None):
    if _is_api(request):
        return error_response(404, "not_found", f"No such resource: {request.path}")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if _is_api(request):
        return error_response(500, "server_error", "The server failed to answer; the error was logged.")
    from django.views.defaults import server_error

    return server_error(request)
