"""The two endpoints the on-device agent calls. Plain Django views: they are the fleet's hot paths."""

import functools
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.db import DatabaseError, DataError, InterfaceError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from devices.models import Device, DeviceAccessRevoked
from devices.provisioning import (
    RegistrationRefused,
    device_key_exchange,
    device_register,
    provisioning_key_exists,
    registration_parse,
)
from devices.selectors import device_for_key, device_for_poll, device_for_report
from ingest.services import device_mqtt_credentials_issue, device_mqtt_has_credentials, mqtt_answer, mqtt_enabled
from reconciliation.agent_protocol import (
    ProtocolError,
    StoredReport,
    api_key_from,
    body_inflate,
    json_parse,
    reports_parse,
)
from reconciliation.metrics import POLLS, REPORTS, REPORTS_REJECTED
from reconciliation.services import projection, reports
from sensorsync_project.api.errors import error_response
from sensorsync_project.database import database_unavailable
from sensorsync_project.ratelimit import rate_limit_hit, rate_parse

logger = logging.getLogger("sensorsync.agent")

_View = Callable[..., HttpResponse]


def _json(data, status: int = 200, **headers) -> HttpResponse:
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
    _rate_limit(f"{name}:{device.uuid}", setting, who="This device", what=what)
    return device


def _rate_limit(key: str, setting: str, *, who: str, what: str) -> None:
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


def _etag_matches(header: str, etag: str) -> bool:
    # Weak comparison, as RFC 9110 asks of If-None-Match.
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in header.split(","))


@agent_endpoint("GET", "HEAD")
def device_state(request, uuid):
    """GET /api/v1/device/<uuid>/state: the target state, 304 when the agent already has it."""
    if_none_match = request.headers.get("If-None-Match", "")
    device = device_authenticate(request, select=partial(device_for_poll, with_content=not if_none_match), uuid=uuid)
    target = device.target_state
    if _etag_matches(if_none_match, target.etag):
        reports.target_state_fetched(device=device)
        POLLS.labels("304").inc()
        response = HttpResponse(status=304)
        response["ETag"] = target.etag
        return response
    if if_none_match:  # the lean read left the content out; version with it, in case it just changed
        target.refresh_from_db(fields=["config", "apps", "version"])
    reports.target_state_fetched(device=device)
    POLLS.labels("200").inc()
    body = {str(device.uuid): {"apps": target.apps, "config": target.config, "version": target.version}}
    return _json(body, ETag=target.etag, Cache_Control="no-cache")


def _verdict_body(verdict: reports.ReportVerdict) -> dict:
    """Built from what the request already holds: the reconciliation result, or the statuses the last
    reconciliation cached on the target state (an unchanged or stale report reads no rows)."""
    device = verdict.device
    target = device.target_state
    current = device.current_state_or_none()
    if verdict.result is not None:
        in_sync, sensors = verdict.result.in_sync, projection.sensor_statuses(verdict.result.rows)
    else:
        in_sync, sensors = not target.needs_deployment, target.sensor_statuses
    body = {
        "outcome": verdict.outcome,
        "targetVersion": target.version,
        "reportedVersion": verdict.report_version,
        "appliedVersion": current.version if current else None,
        "inSync": in_sync,
        "sensors": sensors,
    }
    if verdict.reconciliation_failed:
        body["reconciliation"] = "failed: the report was stored; the sensor table will be repaired on a later report"
    return body


@agent_endpoint("PATCH", count_rejected=True)
def device_state_report(request):
    """PATCH /api/v1/device/state: the agent reports what actually runs."""
    device = device_authenticate(request, select=device_for_report)
    content_type = request.content_type or ""
    if content_type not in ("application/json", ""):
        raise ProtocolError(415, "unsupported_media_type", f"Content-Type '{content_type}' is not accepted; send JSON.")
    limit = settings.SENSORSYNC_MAX_REPORT_BYTES
    body = body_inflate(request.body, request.headers.get("Content-Encoding", ""), limit=limit)
    current = device.current_state_or_none()
    stored = StoredReport(current.digest, current.parts) if current else None
    report = reports_parse(json_parse(body), device_uuid=device.uuid, stored=stored)
    verdict = reports.state_report_apply(device=device, report=report)
    REPORTS.labels(verdict.outcome).inc()
    return _json({str(device.uuid): _verdict_body(verdict)})


def _json_body(request) -> dict:
    if (request.content_type or "") not in ("application/json", ""):
        raise ProtocolError(415, "unsupported_media_type", f"Content-Type '{request.content_type}' is not accepted.")
    limit = settings.SENSORSYNC_MAX_BODY_BYTES
    return json_parse(body_inflate(request.body, request.headers.get("Content-Encoding", ""), limit=limit))


def _mqtt(device: Device) -> dict:
    """What the agent reads of its MQTT setup; always present, because the agent dereferences it. With MQTT
    ingestion configured, a new random password (any earlier one stops working: a repeated registration is an agent
    that lost the first answer); an empty broker (MQTT off, or the broker unreachable) keeps it on HTTP."""
    return mqtt_answer(device, password=device_mqtt_credentials_issue(device=device))


@agent_endpoint("POST")
def device_register_view(request):
    """POST /api/v1/device/register: a device registers itself with a provisioning key (Bearer)."""
    address = request.META.get("REMOTE_ADDR", "-")
    _rate_limit(
        f"register:{address}", settings.SENSORSYNC_REGISTER_RATE_LIMIT, who="This address", what="registrations"
    )
    scheme, _, provisioning_key = request.headers.get("Authorization", "").partition(" ")
    provisioning_key = provisioning_key.strip()
    if scheme.lower() != "bearer" or not provisioning_key:
        raise ProtocolError(401, "not_authenticated", "Send the provisioning key in Authorization: Bearer.")
    if not provisioning_key_exists(secret=provisioning_key):  # who asks comes before what they sent
        raise ProtocolError(401, "not_authenticated", "Unknown provisioning key.")
    registration = device_register(provisioning_key=provisioning_key, request=registration_parse(_json_body(request)))
    device = registration.device
    body = {
        "id": device.pk,
        "uuid": str(device.uuid),
        "deviceName": device.name,
        "deviceType": device.device_type,
        "mqtt": _mqtt(device),
    }
    return _json(body, status=201)


@agent_endpoint("POST")
def device_key_exchange_view(request, uuid):
    """POST /api/v1/device/<uuid>/key-exchange: the agent proves it holds its own key (Bearer)."""
    device = device_authenticate(request, select=device_for_key, uuid=uuid)
    data = _json_body(request) if request.body else {}
    if not isinstance(data, dict):
        raise ProtocolError(
            400, "validation_error", "The body must be a JSON object.", {"body": ["Must be an object."]}
        )
    if data.get("uuid") not in (None, str(uuid)):
        raise ProtocolError(400, "validation_error", "uuid: Not this device's uuid.", {"uuid": ["Not this device."]})
    if data.get("deviceApiKey") not in (None, api_key_from(request.headers)):
        raise ProtocolError(
            400,
            "validation_error",
            "deviceApiKey: Not the key this request authenticates with.",
            {"deviceApiKey": ["Not the key this request authenticates with."]},
        )
    device_key_exchange(device=device)
    body: dict[str, object] = {"status": "ok", "uuid": str(device.uuid), "deviceName": device.name}
    if mqtt_enabled() and not device_mqtt_has_credentials(device=device):
        # A device with no MQTT credentials under its current key (created by staff, or re-keyed) gets them here.
        body["mqtt"] = _mqtt(device)
    return _json(body)
