"""The agent protocol's HTTP side, shared by every app's agent endpoints (the target state and reports in
``reconciliation``, the log upload in ``devicelogs``): the device's key, its rate budget, and every refusal in the
JSON error shape of SPEC section 7, never HTML and never a 500 for bad input."""

import functools
import logging
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.db import DatabaseError, DataError, InterfaceError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from devices.models import Device, DeviceAccessRevoked
from devices.provisioning import RegistrationRefused
from reconciliation.agent_protocol import ProtocolError, api_key_from
from reconciliation.metrics import REPORTS, REPORTS_REJECTED
from sensorsync_project.database import database_unavailable
from sensorsync_project.ratelimit import rate_limit_hit, rate_parse

from .errors import error_response

logger = logging.getLogger("sensorsync.agent")

_View = Callable[..., HttpResponse]


def json_response(data, status: int = 200, **headers) -> HttpResponse:
    response = HttpResponse(orjson.dumps(data), content_type="application/json", status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def agent_endpoint(*methods: str, count_rejected: bool = False) -> Callable[[_View], _View]:
    """Method check, and every refusal as the JSON error shape (never HTML, never a 500 for bad input)."""

    def decorate(view: _View) -> _View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(
                    405, "method_not_allowed", f"Method {request.method} is not allowed here.", Allow=", ".join(methods)
                )
            try:
                return view(request, *args, **kwargs)
            except _REFUSALS as exc:
                return _refusal_response(request, exc, count_rejected=count_rejected)

        return wrapped

    return decorate


# What an agent endpoint answers in the JSON error shape (``_refusal_response``); anything else is a bug, a 500.
_REFUSALS = (
    RegistrationRefused,
    DeviceAccessRevoked,
    ValidationError,
    ProtocolError,
    Device.DoesNotExist,
    RequestDataTooBig,
    DatabaseError,
    InterfaceError,  # a closed connection: not a DatabaseError
)


def _refusal_response(
    request: HttpRequest,
    exc: RegistrationRefused
    | DeviceAccessRevoked
    | ValidationError
    | ProtocolError
    | Device.DoesNotExist
    | RequestDataTooBig
    | DatabaseError
    | InterfaceError,
    *,
    count_rejected: bool,
) -> HttpResponse:
    if isinstance(exc, (RegistrationRefused, DeviceAccessRevoked)):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, ValidationError):
        fields = exc.message_dict
        first = next(iter(fields.items()))
        return error_response(400, "validation_error", f"{first[0]}: {first[1][0]}", fields)
    if isinstance(exc, ProtocolError):
        if count_rejected:
            REPORTS.labels("rejected").inc()
            REPORTS_REJECTED.labels(exc.reason).inc()
        headers = {"WWW_Authenticate": 'Bearer realm="device"'} if exc.status == 401 else {}
        return error_response(exc.status, exc.code, exc.message, exc.fields, **headers, **exc.headers)
    if isinstance(exc, Device.DoesNotExist):
        # Deleted between authentication and the write: its key no longer belongs to any device.
        return error_response(401, "not_authenticated", "Unknown device key.")
    if isinstance(exc, RequestDataTooBig):
        return error_response(413, "payload_too_large", "The request body is too large.")
    if isinstance(exc, DataError):
        logger.warning("data error answered 400 on %s", request.path, exc_info=True)
        return error_response(400, "invalid_value", "A value in the report cannot be stored.")
    return _database_failure_response(request, exc)


def _database_failure_response(request: HttpRequest, exc: DatabaseError | InterfaceError) -> HttpResponse:
    """503 when the database is away or busy (the agent retries), 500 when it refused the statement."""
    if not database_unavailable(exc):
        logger.exception("database refused a statement on %s", request.path)
        return error_response(500, "server_error", "The server failed on this request; nothing was written.")
    logger.warning("database unavailable on %s: %s", request.path, exc)
    return error_response(
        503, "database_unavailable", "The database is unavailable; nothing was written.", Retry_After="5"
    )


def device_authenticate(request, *, select, uuid=None, budget: tuple[str, str, str] | None = None) -> Device:
    """401 for a missing or unknown key, 403 for another device's URL or an inactive device, 429 over budget.

    ``select`` is the selector that loads what the endpoint needs in the same query (poll or report). ``budget``
    is the rate limit counted: (its name, its "COUNT/SECONDS" setting, what it counts), the agent's requests by
    default; the log uploads have their own, so a chatty log never holds back a poll or a report."""
    api_key = api_key_from(request.headers)
    if not api_key:
        raise ProtocolError(
            401, "not_authenticated", "Send the device key in X-Device-API-Key or Authorization: Bearer."
        )
    device = select(api_key=api_key)
    if device is None:
        raise ProtocolError(401, "not_authenticated", "Unknown device key.")
    if uuid is not None and device.uuid != uuid:
        raise ProtocolError(403, "permission_denied", "This key belongs to another device.")
    if not device.is_active:
        raise ProtocolError(403, "device_inactive", "This device is deactivated.")
    name, setting, what = budget or ("agent", settings.SENSORSYNC_AGENT_RATE_LIMIT, "requests")
    rate_limit_check(f"{name}:{device.uuid}", setting, who="This device", what=what)
    return device


def rate_limit_check(key: str, setting: str, *, who: str, what: str) -> None:
    """429 with Retry-After once ``key`` is past its budget (``setting``: "COUNT/SECONDS")."""
    rate = rate_parse(setting)
    if rate is None:  # the limit is off
        return
    retry_after = rate_limit_hit(key, rate)
    if retry_after is not None:
        raise ProtocolError(
            429,
            "rate_limited",
            f"{who} sent more than {rate.count} {what} in {rate.period} s; retry in {retry_after} s.",
            headers={"Retry_After": str(retry_after)},
        )
