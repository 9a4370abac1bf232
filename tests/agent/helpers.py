"""Plain helpers for the agent-protocol suite: an agent's two calls, staff writes, and database snapshots.

Agent calls go through ``django.test.Client`` with raw bytes and explicit headers, exactly as a device sends them;
staff calls go through a DRF ``APIClient`` authenticated as a superuser.
"""

import copy
import gzip as gzip_lib
import json

from devices.models import Device, DeviceCurrentState, DeviceTargetState
from events.models import Event
from sensors.models import DeviceSensor

API = "/api/v1"
REPORT_URL = f"{API}/device/state"


# --------------------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------------------


def state_url(uuid) -> str:
    return f"{API}/device/{uuid}/state"


def sensors_url(uuid) -> str:
    return f"{API}/devices/{uuid}/sensors"


def sensor_url(uuid, name: str) -> str:
    return f"{API}/devices/{uuid}/sensors/{name}"


def target_state_url(uuid) -> str:
    return f"{API}/devices/{uuid}/target-state"


def current_state_url(uuid) -> str:
    return f"{API}/devices/{uuid}/current-state"


def drift_url(uuid) -> str:
    return f"{API}/devices/{uuid}/drift"


def reconcile_url(uuid) -> str:
    return f"{API}/devices/{uuid}/reconcile"


# --------------------------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------------------------


def sensor(name: str, **overrides) -> dict:
    """A valid sensor object as staff send it (SPEC section 3), no id."""
    data = {
        "name": name,
        "protocol": "modbus",
        "enabled": True,
        "pollInterval": 5000,
        "connection": {"host": "10.0.0.5", "port": 502, "unitId": 1},
        "dataPoints": [{"name": "temperature", "address": 40001, "type": "float32", "unit": "C"}],
        "metadata": {},
    }
    data.update(overrides)
    return data


def auth_headers(key: str | None, *, style: str = "x") -> dict:
    if key is None:
        return {}
    if style == "bearer":
        return {"Authorization": f"Bearer {key}"}
    return {"X-Device-API-Key": key}


def report_entry(version, sensors: list[dict], *, health: dict | None = None, seq: int | None = None, **extra) -> dict:
    """One device's report, as the agent sends it (system info included, so it is realistic)."""
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


def send_raw(
    client,
    raw: bytes,
    *,
    key: str | None,
    content_type: str = "application/json",
    encoding: str | None = None,
    style: str = "x",
):
    headers = auth_headers(key, style=style)
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
    assert response.status_code == 200, (response.status_code, response.content[:800])
    body = response.json()
    assert list(body) == [str(device.uuid)], body
    return body[str(device.uuid)]


def poll(client, device, etag: str | None = None, *, key: str | None = None, style: str = "x"):
    """GET /device/<uuid>/state, with If-None-Match when ``etag`` is given."""
    headers = auth_headers(key or device.api_key, style=style)
    if etag is not None:
        headers["If-None-Match"] = etag
    return client.get(state_url(device.uuid), headers=headers)


def target_sensors(device) -> list[dict]:
    """What the agent runs after deploying the current target: the target's sensors, ids included."""
    return copy.deepcopy(DeviceTargetState.objects.get(device_id=device.pk).config["sensors"])


def target_version(device) -> int:
    return DeviceTargetState.objects.get(device_id=device.pk).version


def fresh(device) -> Device:
    """The device re-read from the database, keeping its plaintext key for agent calls."""
    copy_ = Device.objects.select_related("target_state").get(pk=device.pk)
    copy_.api_key = device.api_key
    return copy_


# --------------------------------------------------------------------------------------------------------------
# Staff calls
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Database snapshots ("nothing was written")
# --------------------------------------------------------------------------------------------------------------

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


def events_of(device, *types: str) -> list[Event]:
    queryset = Event.objects.filter(aggregate_type="device", aggregate_id=str(device.uuid)).order_by("sequence")
    if types:
        queryset = queryset.filter(type__in=types)
    return list(queryset)


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def events_after(device, last_id: int, *types: str) -> list[Event]:
    return [e for e in events_of(device, *types) if e.id > last_id]
