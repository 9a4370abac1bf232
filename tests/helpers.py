"""Plain helpers shared by the whole suite (fixtures live in ``tests/conftest.py``): the API's URLs, a valid sensor,
the agent's two calls, staff calls, error assertions and database snapshots.

Agent calls go through ``django.test.Client`` with raw bytes and explicit headers, exactly as a device sends them
(``X-Device-API-Key`` or ``Authorization: Bearer``). Staff calls go either through a DRF ``APIClient`` (the
``admin_client`` fixture) or with a real DRF token (``staff_headers(token_for(user))``), as a script does.
Real server processes for the reliability suite are in ``tests/servers.py``.
"""

import contextlib
import copy
import gzip as gzip_lib
import json
import logging
from dataclasses import dataclass
from io import StringIO

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token

from devices.models import Device, DeviceCurrentState, DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import state_report_apply
from reconciliation.services.sensors import sensor_create
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory

IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

# ---------------------------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------------------------

API = "/api/v1"
REPORT_URL = f"{API}/device/state"  # the agent's PATCH


def state_url(uuid) -> str:
    """The agent's poll."""
    return f"{API}/device/{uuid}/state"


def devices_url() -> str:
    return f"{API}/devices"


def device_url(uuid) -> str:
    return f"{API}/devices/{uuid}"


def rotate_key_url(uuid) -> str:
    return f"{API}/devices/{uuid}/rotate-key"


def target_state_url(uuid) -> str:
    return f"{API}/devices/{uuid}/target-state"


def rollback_url(uuid) -> str:
    return f"{API}/devices/{uuid}/target-state/rollback"


def sensors_url(uuid) -> str:
    return f"{API}/devices/{uuid}/sensors"


def sensor_url(uuid, name: str) -> str:
    return f"{API}/devices/{uuid}/sensors/{name}"


def fleet_sensors_url() -> str:
    return f"{API}/sensors"


def current_state_url(uuid) -> str:
    return f"{API}/devices/{uuid}/current-state"


def drift_url(uuid) -> str:
    return f"{API}/devices/{uuid}/drift"


def reconcile_url(uuid) -> str:
    return f"{API}/devices/{uuid}/reconcile"


def events_url() -> str:
    return f"{API}/events"


def device_events_url(uuid) -> str:
    return f"{API}/devices/{uuid}/events"


# ---------------------------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------------------------


def sensor_payload(name: str, **overrides) -> dict:
    """A valid sensor object as staff send it (SPEC section 3, no id): ``SensorPayloadFactory``'s modbus sensor
    with this name; ``overrides`` replace or add fields."""
    return SensorPayloadFactory.build(name=name, **overrides)


def report_entry(version, sensors: list[dict], *, health: dict | None = None, seq: int | None = None, **extra) -> dict:
    """One device's report, as the agent sends it (system info included, so it is realistic); ``health`` is the
    seed note's ``sensor_health``, ``extra`` adds top-level fields."""
    entry = {
        "version": version,
        "config": {"sensors": sensors},
        "apps": {},
        "os_version": "Debian GNU/Linux 12",
        "agent_version": "2.4.1",
        "local_ip": "192.168.1.20",
        "uptime": 3600,
    }
    if health is not None:
        entry["sensor_health"] = health
    if seq is not None:
        entry["seq"] = seq
    entry.update(extra)
    return entry


def report_body(device, version, sensors: list[dict], **kwargs) -> bytes:
    """A whole report body (JSON bytes) for ``device``: ``{uuid: report_entry(...)}``."""
    return json.dumps({str(device.uuid): report_entry(version, sensors, **kwargs)}).encode()


# ---------------------------------------------------------------------------------------------------------------
# The agent's calls
# ---------------------------------------------------------------------------------------------------------------


def agent_headers(key: str | None, *, style: str = "x") -> dict:
    """A device key as the agent sends it: ``X-Device-API-Key`` (style "x") or ``Authorization: Bearer``."""
    if key is None:
        return {}
    if style == "bearer":
        return {"Authorization": f"Bearer {key}"}
    return {"X-Device-API-Key": key}


def send_raw(
    client,
    raw: bytes,
    *,
    key: str | None,
    content_type: str = "application/json",
    encoding: str | None = None,
    style: str = "x",
):
    """PATCH /device/state with these exact bytes."""
    headers = agent_headers(key, style=style)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return client.generic("PATCH", REPORT_URL, data=raw, content_type=content_type, headers=headers)


def send_body(client, body, *, key: str | None, gzip: bool = False, style: str = "x"):
    raw = json.dumps(body).encode()
    if gzip:
        return send_raw(client, gzip_lib.compress(raw), key=key, encoding="gzip", style=style)
    return send_raw(client, raw, key=key, style=style)


def report(
    client,
    device,
    version,
    sensors: list[dict],
    health: dict | None = None,
    seq: int | None = None,
    gzip: bool = False,
    *,
    key: str | None = None,
    style: str = "x",
    **extra,
):
    """PATCH /device/state for ``device`` with its own key (or ``key``)."""
    body = {str(device.uuid): report_entry(version, sensors, health=health, seq=seq, **extra)}
    return send_body(client, body, key=key or device.api_key, gzip=gzip, style=style)


def verdict(response, device) -> dict:
    """The report's answer for ``device`` (asserting a 200 about that device only)."""
    assert response.status_code == 200, (response.status_code, response.content[:800])
    body = response.json()
    assert list(body) == [str(device.uuid)], body
    return body[str(device.uuid)]


def poll(client, device, etag: str | None = None, *, key: str | None = None, style: str = "x"):
    """GET /device/<uuid>/state, with If-None-Match when ``etag`` is given."""
    headers = agent_headers(key or device.api_key, style=style)
    if etag is not None:
        headers["If-None-Match"] = etag
    return client.get(state_url(device.uuid), headers=headers)


def report_running(
    device, *, sensors: list[dict] | None = None, version: int | None = None, **extra
) -> DeviceCurrentState:
    """The agent reports what runs, through the same service the agent endpoint calls (no HTTP).

    ``sensors`` defaults to exactly the current target and ``version`` to the target version (an agent that
    applied everything); ``extra`` adds top-level report fields (``endpoints_health``, metrics).
    """
    device = Device.objects.select_related("target_state").get(pk=device.pk)  # fresh: no cached old target
    target = DeviceTargetState.objects.get(device=device)
    running = target.config["sensors"] if sensors is None else sensors
    parsed = report_parse(
        {
            "version": target.version if version is None else version,
            "config": {**target.config, "sensors": running},
            "apps": target.apps,
            **extra,
        }
    )
    answer = state_report_apply(device=device, report=parsed)
    assert answer.outcome == "applied" and not answer.reconciliation_failed, answer
    return DeviceCurrentState.objects.get(device=device)


# ---------------------------------------------------------------------------------------------------------------
# Devices and their target
# ---------------------------------------------------------------------------------------------------------------


def fresh(device) -> Device:
    """The device re-read from the database, keeping its plaintext key for agent calls."""
    copy_ = Device.objects.select_related("target_state").get(pk=device.pk)
    copy_.api_key = device.api_key
    return copy_


def device_with(*names: str, user=None, **device_fields) -> Device:
    """A device (with ``.api_key``) whose target holds a valid sensor of each name (target version
    1 + len(names)), created through the service as ``user``; never reported."""
    device = DeviceFactory(**device_fields)
    for name in names:
        sensor_create(device_uuid=device.uuid, data=sensor_payload(name), user=user)
    return fresh(device)


def target_of(device) -> DeviceTargetState:
    return DeviceTargetState.objects.get(device__uuid=device.uuid)


def target_sensors(device) -> list[dict]:
    """What the agent runs after deploying the current target: the target's sensors, ids included."""
    return copy.deepcopy(DeviceTargetState.objects.get(device_id=device.pk).config["sensors"])


def target_version(device) -> int:
    return DeviceTargetState.objects.get(device_id=device.pk).version


# ---------------------------------------------------------------------------------------------------------------
# Staff calls
# ---------------------------------------------------------------------------------------------------------------


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def staff_headers(token: str) -> dict:
    return {"Authorization": f"Token {token}"}


def add_sensor(admin_client, device, payload: dict) -> dict:
    response = admin_client.post(sensors_url(device.uuid), payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def change_sensor(admin_client, device, name: str, changes: dict) -> dict:
    response = admin_client.patch(sensor_url(device.uuid, name), changes, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def delete_sensor(admin_client, device, name: str) -> None:
    response = admin_client.delete(sensor_url(device.uuid, name))
    assert response.status_code == 204, response.content


def put_target(admin_client, device, sensors: list[dict]) -> dict:
    response = admin_client.put(target_state_url(device.uuid), {"config": {"sensors": sensors}}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def rows(admin_client, device) -> dict[str, dict]:
    """The device's sensor rows through the API, by name."""
    response = admin_client.get(sensors_url(device.uuid), {"limit": 500})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(body["results"]), "more rows than one page"
    return {row["name"]: row for row in body["results"]}


def drift(admin_client, device) -> dict:
    response = admin_client.get(drift_url(device.uuid))
    assert response.status_code == 200, response.content
    return response.json()


# ---------------------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------------------

# A sensor row of the management API (SPEC section 7, in this order).
SENSOR_ROW_KEYS = [
    "id",
    "deviceUuid",
    "name",
    "protocol",
    "enabled",
    "pollInterval",
    "connection",
    "dataPoints",
    "metadata",
    "configVersion",
    "syncedToConfig",
    "deploymentStatus",
    "running",
    "lastDeployedAt",
    "deploymentError",
    "deploymentAttempts",
    "statusChangedAt",
    "desired",
    "createdAt",
    "updatedAt",
    "createdBy",
    "updatedBy",
    # The SPEC's list, then the adapter's health, the fields the agent did not report and the draft.
    "unreportedFields",
    "healthStatus",
    "connected",
    "communicationQuality",
    "healthError",
    "healthErrorCount",
    "healthLastSeen",
    "healthChangedAt",
    "draft",
]


def assert_error(response, status: int, code: str, *, fields: list[str] | None = None) -> dict:
    """The stable error shape of SPEC section 7, exactly: this status and code, and ``fields`` naming these wire
    fields (or no ``fields`` at all when None)."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    if fields is None:
        assert "fields" not in body, body
    else:
        assert isinstance(body.get("fields"), dict), body
        for name in fields:
            assert name in body["fields"], (name, body["fields"])
            assert body["fields"][name] and all(isinstance(m, str) and m for m in body["fields"][name]), body
    return body


def assert_error_shape(response, statuses, causes: list[str] | None = None) -> dict:
    """SPEC section 7: every refusal is JSON ``{"error": code, "message": sentence[, "fields": {...}]}``, with one
    of ``statuses`` (an int or a set); ``causes`` (from ``server_errors``) explain a 5xx in the message."""
    statuses = {statuses} if isinstance(statuses, int) else set(statuses)
    body_head = response.content[:400]
    assert response.status_code in statuses, (response.status_code, sorted(statuses), body_head, causes or [])
    content_type = response.get("Content-Type", "")
    assert content_type.startswith("application/json"), (response.status_code, content_type, body_head)
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if "fields" in body:
        assert isinstance(body["fields"], dict), body
    return body


class _ServerErrors(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.causes.append(f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}")


@contextlib.contextmanager
def server_errors():
    """The exceptions the server logged meanwhile (what is behind a 500 or a 503), for assertion messages."""
    handler = _ServerErrors()
    logging.getLogger().addHandler(handler)
    try:
        yield handler.causes
    finally:
        logging.getLogger().removeHandler(handler)


# ---------------------------------------------------------------------------------------------------------------
# Consistency
# ---------------------------------------------------------------------------------------------------------------


def read_model_and_log_consistent() -> list[str]:
    """``rebuild_read_model --check`` and ``replay_events --check``; their complaints, or [] when both pass."""
    problems = []
    for command in ("rebuild_read_model", "replay_events"):
        out = StringIO()
        try:
            call_command(command, "--check", stdout=out, stderr=StringIO())
        except Exception as exc:  # CommandError on a difference; anything else is as much a failure
            problems.append(f"{command} --check: {type(exc).__name__}: {exc}\n{out.getvalue()[-3000:]}")
    return problems


def event_sequences(device_uuid) -> list[int]:
    return list(
        Event.objects.filter(aggregate_type="device", aggregate_id=str(device_uuid))
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )


def assert_gapless(device_uuid) -> None:
    sequences = event_sequences(device_uuid)
    assert sequences == list(range(1, len(sequences) + 1)), sequences


def assert_target_history_contiguous(device) -> None:
    """Target versions strictly increase, none reused, every version kept (SPEC section 2)."""
    versions = list(
        DeviceTargetStateVersion.objects.filter(device_id=device.pk).order_by("id").values_list("version", flat=True)
    )
    assert versions == sorted(versions), f"history rows not in increasing version order: {versions}"
    assert len(versions) == len(set(versions)), f"a target version was written twice: {versions}"
    current = DeviceTargetState.objects.get(device_id=device.pk).version
    assert versions == list(range(1, current + 1)), (current, versions)


# ---------------------------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------------------------


def events_of(device, *types: str) -> list[Event]:
    queryset = Event.objects.filter(aggregate_type="device", aggregate_id=str(device.uuid)).order_by("sequence")
    if types:
        queryset = queryset.filter(type__in=types)
    return list(queryset)


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def events_after(device, last_id: int, *types: str) -> list[Event]:
    return [e for e in events_of(device, *types) if e.id > last_id]


def events_since(last_id: int | None):
    return Event.objects.filter(id__gt=last_id or 0).order_by("id")


# ---------------------------------------------------------------------------------------------------------------
# "Nothing was written": snapshots of one device, of the management API's tables, and of every table
# ---------------------------------------------------------------------------------------------------------------

DEVICE_FIELDS = (
    "is_active",
    "api_key_digest",
    "last_seen_at",
    "os_version",
    "agent_version",
    "ip_address",
    "uptime",
    "facts",
    "facts_reported_at",
    "last_fetched_version",
    "last_fetched_at",
    "last_report_seq",
    "last_report_clock_us",
    "updated_at",
)
SENSOR_FIELDS = tuple(f.name for f in DeviceSensor._meta.concrete_fields if f.name not in ("id",))


def device_snapshot(device) -> dict:
    """Everything an agent call may write for one device: the device row, both states, rows and events."""
    target = DeviceTargetState.objects.filter(device_id=device.pk).values().first()
    current = DeviceCurrentState.objects.filter(device_id=device.pk).values().first()
    return {
        "device": Device.objects.filter(pk=device.pk).values(*DEVICE_FIELDS).first(),
        "target": target,
        "current": current,
        "sensors": list(DeviceSensor.objects.filter(device_id=device.pk).order_by("name").values(*SENSOR_FIELDS)),
        "events": list(
            Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence").values_list("id", "type")
        ),
    }


@dataclass(frozen=True)
class WriteSnapshot:
    """Everything a write to the management API may touch, for 'nothing was written' assertions."""

    devices: tuple
    targets: tuple
    history: tuple
    sensors: tuple
    events: int
    last_event_id: int | None


def write_snapshot() -> WriteSnapshot:
    return WriteSnapshot(
        devices=tuple(
            Device.objects.order_by("id").values_list(
                "id", "uuid", "name", "description", "is_active", "api_key_digest"
            )
        ),
        targets=tuple(
            DeviceTargetState.objects.order_by("device_id").values_list(
                "device_id", "version", "config", "apps", "needs_deployment", "updated_at"
            )
        ),
        history=tuple(DeviceTargetStateVersion.objects.order_by("id").values_list("id", "device_id", "version")),
        sensors=tuple(
            DeviceSensor.objects.order_by("id").values_list(
                "id",
                "device_id",
                "sensor_id",
                "name",
                "protocol",
                "enabled",
                "poll_interval",
                "connection",
                "data_points",
                "metadata",
                "config_version",
                "deployment_status",
                "desired",
                "updated_at",
            )
        ),
        events=Event.objects.count(),
        last_event_id=Event.objects.order_by("-id").values_list("id", flat=True).first(),
    )


SNAPSHOT_APPS = ("devices", "sensors", "reconciliation", "events", "fleetconfig", "webhooks")


def world_snapshot() -> dict:
    """Every row of every model the product owns (devices with their liveness, target states and their history,
    current states, read-model rows, events, drift records, ...), by model label: what "nothing was written"
    compares. Built from the app registry, so a model added later is covered too."""
    from django.apps import apps

    snapshot = {}
    for label in SNAPSHOT_APPS:
        for model in apps.get_app_config(label).get_models():
            model_rows = model.objects.order_by("pk").values()
            snapshot[model._meta.label] = [tuple(sorted(row.items())) for row in model_rows]
    return snapshot


def snapshot_diff(before: dict, after: dict) -> list[str]:
    """Which parts of the world changed (for a readable assertion message)."""
    return [name for name in before if before[name] != after[name]]


def database_text() -> str:
    """Every row of every table the project owns or uses, as text (sessions decoded): for secret scans."""
    from django.apps import apps
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    chunks = []
    for model in apps.get_models():
        if model is Session:
            for session in Session.objects.all():
                chunks.append(session.session_data)
                chunks.append(repr(SessionStore().decode(session.session_data)))
            continue
        chunks.extend(repr(row) for row in model.objects.values_list())
    return "\n".join(chunks)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def migrate_to(targets: list[tuple[str, str]]):
    """Migrate the test database to ``targets`` (app, migration); the apps as of those migrations."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps
