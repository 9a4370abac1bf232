"""Helpers shared by the management API tests (plain functions; fixtures live in each folder's conftest)."""

from dataclasses import dataclass

from devices.models import Device, DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from sensors.models import DeviceSensor

API = "/api/v1"

# SPEC section 7, in this order.
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
    # The SPEC's list, then the adapter's health and the fields the agent did not report.
    "unreportedFields",
    "healthStatus",
    "connected",
    "communicationQuality",
    "healthError",
    "healthErrorCount",
    "healthLastSeen",
    "healthChangedAt",
]


def devices_url() -> str:
    return f"{API}/devices"


def device_url(uuid) -> str:
    return f"{API}/devices/{uuid}"


def rotate_key_url(uuid) -> str:
    return f"{API}/devices/{uuid}/rotate-key"


def target_state_url(uuid) -> str:
    return f"{API}/devices/{uuid}/target-state"


def sensors_url(uuid) -> str:
    return f"{API}/devices/{uuid}/sensors"


def sensor_url(uuid, name: str) -> str:
    return f"{API}/devices/{uuid}/sensors/{name}"


def fleet_sensors_url() -> str:
    return f"{API}/sensors"


def assert_error(response, status: int, code: str, *, fields: list[str] | None = None) -> dict:
    """The stable error shape of SPEC section 7. ``fields`` lists wire field names that must be named."""
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


def target_of(device) -> DeviceTargetState:
    return DeviceTargetState.objects.get(device__uuid=device.uuid)


def events_since(last_id: int | None):
    return Event.objects.filter(id__gt=last_id or 0).order_by("id")
