import uuid as uuid_lib
from collections.abc import Collection

from devices.models import Device
from devices.selectors import AGENT_DEFERRED_DEVICE, REPORT_DEFERRED_TARGET
from sensorsync_project.hot_queries import KeyedInstance

# What an MQTT report needs, as the PATCH's lookup (devices.selectors.device_for_report) reads it, and the key the
# device's MQTT credentials were issued under: one SELECT written once per process (no queryset to compile per
# batch), by uuid.
_MQTT_REPORT = KeyedInstance(
    Device,
    key="uuid",
    deferred=AGENT_DEFERRED_DEVICE,
    related={
        "target_state": ("apps", *REPORT_DEFERRED_TARGET),
        "current_state": ("config", "apps", "sensor_health"),
        "mqtt_credentials": ("issued_at",),
    },
)


def _with_mqtt_key(device: Device) -> Device:
    """``mqtt_key_digest``: the key the device's MQTT credentials were issued under, None if it has none."""
    credentials = getattr(device, "mqtt_credentials", None)  # loaded (or known absent) with it: no query
    device.mqtt_key_digest = credentials.key_digest if credentials is not None else None  # type: ignore[attr-defined]
    return device


def device_for_mqtt_report(*, uuid: uuid_lib.UUID) -> Device | None:
    """The device an MQTT report's topic names, loaded as the PATCH's ``device_for_report`` loads it (the target's
    version and cached statuses, the stored report's digest), with the key its MQTT credentials were issued under
    (``mqtt_key_digest``, None if it has none), in one query."""
    device = _MQTT_REPORT.get(uuid)
    return _with_mqtt_key(device) if device is not None else None


def devices_for_mqtt_reports(*, uuids: Collection[uuid_lib.UUID]) -> dict[uuid_lib.UUID, Device]:
    """``device_for_mqtt_report`` for a batch of messages: every device they name, by uuid, in one query."""
    return {device.uuid: _with_mqtt_key(device) for device in _MQTT_REPORT.get_in(sorted(uuids))}
