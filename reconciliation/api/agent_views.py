"""The endpoints the on-device agent calls for its target state, its reports, its registration and its key. Plain
Django views: they are the fleet's hot paths. What every agent endpoint shares is ``sensorsync_project.api.agent``."""

from functools import partial

from django.conf import settings
from django.http import HttpResponse

from devices.models import Device
from devices.provisioning import (
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
from reconciliation.metrics import POLLS, REPORTS
from reconciliation.services import projection, reports
from sensorsync_project.api.agent import agent_endpoint, device_authenticate, json_response, rate_limit_check


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
    return json_response(body, ETag=target.etag, Cache_Control="no-cache")


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
    return json_response({str(device.uuid): _verdict_body(verdict)})


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
    rate_limit_check(
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
    return json_response(body, status=201)


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
    return json_response(body)
