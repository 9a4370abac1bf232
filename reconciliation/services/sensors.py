"""Staff writes to one sensor of a device's desired state. The target configuration is written first (a new
version), then the read model is re-projected from it (``targets.target_state_write``), in one transaction holding
the device row lock."""

import uuid as uuid_lib
from typing import Any

from django.core.exceptions import ValidationError

from devices.locking import device_events, device_write
from devices.models import Device
from devices.target_config import SENSORS_KEY, config_sensors, config_upcast
from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label
from events.services import EventRecorder
from sensors.models import DeviceSensor
from sensors.validation import COMPARED_FIELDS, sensor_validate, sensors_limit, sensors_limit_message
from sensorsync_project.exceptions import SensorNotFound, if_match_check

from .targets import target_state_write


def _sensors(config: dict) -> list[dict]:
    return list(config_sensors(config))


def _index_of(sensors: list[dict], name: str) -> int:
    for index, sensor in enumerate(sensors):
        if sensor["name"] == name:
            return index
    raise SensorNotFound(name)


def _strip_own_id(data: Any, sensor_id: str | None) -> Any:
    """A client may send back the id it read; any other id is an attempt to set it and is rejected."""
    if isinstance(data, dict) and "id" in data and sensor_id is not None and str(data["id"]) == sensor_id:
        return {key: value for key, value in data.items() if key != "id"}
    return data


def _row(device: Device, name: str) -> DeviceSensor:
    row = DeviceSensor.objects.get(device=device, name=name)
    row.device = device  # the locked instance, whose target state is the one just written
    return row


def _target_sensors_write(
    *,
    device: Device,
    recorder: EventRecorder,
    sensors: list[dict],
    user: RequestUser,
    change: dict,
    event: str,
    data: dict,
) -> None:
    """Record the sensor event for the version about to be written, then write the target with ``sensors``."""
    target = device.target_state
    recorder.record(event, {**data, "version": target.version + 1}, actor=actor_label(user))
    target_state_write(
        device=device,
        config={**config_upcast(target.config), SENSORS_KEY: sensors},
        apps=target.apps,
        user=user,
        change=change,
    )


def sensor_create(
    *, device_uuid: uuid_lib.UUID | str, data: Any, user: RequestUser, if_match: str | None = None
) -> DeviceSensor:
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        target = device.target_state
        if_match_check(if_match, target.etag)
        sensor = sensor_validate(data)
        sensors = _sensors(target.config)
        if any(s["name"] == sensor["name"] for s in sensors):
            raise ValidationError({"name": [f"A sensor named '{sensor['name']}' already exists on this device."]})
        if len(sensors) >= sensors_limit():
            raise ValidationError({"name": [f"This device has its maximum of sensors. {sensors_limit_message()}"]})
        sensor["id"] = str(uuid_lib.uuid4())
        sensors.append(sensor)
        _target_sensors_write(
            device=device,
            recorder=recorder,
            sensors=sensors,
            user=user,
            change={"added": [sensor["name"]]},
            event=EventTypeChoices.SENSOR_ADDED,
            data={"name": sensor["name"], "id": sensor["id"], "sensor": sensor},
        )
        return _row(device, sensor["name"])


def sensor_update(
    *,
    device_uuid: uuid_lib.UUID | str,
    name: str,
    data: Any,
    partial: bool,
    user: RequestUser,
    if_match: str | None = None,
) -> DeviceSensor:
    """PUT replaces the sensor (fields left out take their defaults); PATCH changes only the fields sent.
    Sending another ``name`` renames the sensor; its id stays."""
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        target = device.target_state
        if_match_check(if_match, target.etag)
        sensors = _sensors(target.config)
        index = _index_of(sensors, name)
        current = sensors[index]
        data = _strip_own_id(data, current["id"])
        if not isinstance(data, dict):
            raise ValidationError({"sensor": ["Must be a JSON object."]})
        merged = {k: v for k, v in current.items() if k != "id"} | data if partial else {"name": name} | data
        sensor = sensor_validate(merged)
        if sensor["name"] != name and any(s["name"] == sensor["name"] for s in sensors):
            raise ValidationError({"name": [f"A sensor named '{sensor['name']}' already exists on this device."]})
        sensor["id"] = current["id"]
        if sensor == current:
            return _row(device, name)
        sensors[index] = sensor
        change: dict[str, Any] = {"updated": [sensor["name"]]}
        if sensor["name"] != name:
            change["renamed"] = {name: sensor["name"]}
        _target_sensors_write(
            device=device,
            recorder=recorder,
            sensors=sensors,
            user=user,
            change=change,
            event=EventTypeChoices.SENSOR_UPDATED,
            data={
                "name": sensor["name"],
                "id": sensor["id"],
                "changed_fields": [f for f in ("name", *COMPARED_FIELDS, "metadata") if sensor[f] != current[f]],
                "sensor": sensor,
            },
        )
        return _row(device, sensor["name"])


def sensor_delete(
    *, device_uuid: uuid_lib.UUID | str, name: str, user: RequestUser, if_match: str | None = None
) -> None:
    """Remove the sensor from the target; its row stays (``reconciling``) while the agent still runs it."""
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        target = device.target_state
        if_match_check(if_match, target.etag)
        sensors = _sensors(target.config)
        removed = sensors.pop(_index_of(sensors, name))
        _target_sensors_write(
            device=device,
            recorder=recorder,
            sensors=sensors,
            user=user,
            change={"removed": [name]},
            event=EventTypeChoices.SENSOR_REMOVED,
            data={"name": name, "id": removed["id"]},
        )
