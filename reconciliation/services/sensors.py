"""Staff writes to one sensor of a device's desired state. The target configuration is written first (a new
version), then the read model is re-projected from it (``targets.target_state_write``), in one transaction holding
the device row lock. A device in draft mode collects the edit in its draft instead: nothing is published and no
row changes, and the service answers with the sensor as the draft now has it (``DraftedSensor``)."""

import uuid as uuid_lib
from dataclasses import dataclass
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

from .targets import WorkingTarget, desired_config_checked, target_state_write, target_working


@dataclass(frozen=True)
class DraftedSensor:
    """A sensor edit stored in the device's draft: not deployed, so no row of the read model changed."""

    device: Device
    name: str
    sensor: dict | None  # as the draft has it now; None once removed
    etag: str  # the draft's, for the next If-Match


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


def _row(device: Device, name: str) -> DeviceSensor | DraftedSensor:
    """The answer to an edit: the row as re-projected, or, for a device with a draft, the drafted sensor."""
    draft = device.target_draft_or_none() if device.draft_mode else None
    if draft is not None:
        sensor = next((s for s in config_sensors(draft.config) if s["name"] == name), None)
        return DraftedSensor(device=device, name=name, sensor=sensor, etag=draft.etag)
    row = DeviceSensor.objects.get(device=device, name=name)
    row.device = device  # the locked instance, whose target state is the one just written
    return row


def _target_sensors_write(
    *,
    device: Device,
    working: WorkingTarget,
    recorder: EventRecorder,
    sensors: list[dict],
    user: RequestUser,
    change: dict,
    event: str,
    data: dict,
) -> None:
    """Record the sensor event for the version about to be written (or for the draft), then write the working
    state with ``sensors``."""
    config = {**config_upcast(working.config), SENSORS_KEY: sensors}
    config = desired_config_checked(device=device, working=working, config=config, edit="sensor", user=user)
    stamp: dict[str, Any] = {"draft": True} if working.drafting else {"version": device.target_state.version + 1}
    recorder.record(event, {**data, **stamp}, actor=actor_label(user))
    target_state_write(
        device=device,
        config=config,
        apps=working.apps,
        user=user,
        change=change,
    )


def sensor_create(
    *, device_uuid: uuid_lib.UUID | str, data: Any, user: RequestUser, if_match: str | None = None
) -> DeviceSensor | DraftedSensor:
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        working = target_working(device)
        if_match_check(if_match, working.etag)
        sensor = sensor_validate(data)
        sensors = _sensors(working.config)
        if any(s["name"] == sensor["name"] for s in sensors):
            raise ValidationError({"name": [f"A sensor named '{sensor['name']}' already exists on this device."]})
        if len(sensors) >= sensors_limit():
            raise ValidationError({"name": [f"This device has its maximum of sensors. {sensors_limit_message()}"]})
        sensor["id"] = str(uuid_lib.uuid4())
        sensors.append(sensor)
        _target_sensors_write(
            device=device,
            working=working,
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
) -> DeviceSensor | DraftedSensor:
    """PUT replaces the sensor (fields left out take their defaults); PATCH changes only the fields sent.
    Sending another ``name`` renames the sensor; its id stays."""
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        working = target_working(device)
        if_match_check(if_match, working.etag)
        sensors = _sensors(working.config)
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
            working=working,
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
        working = target_working(device)
        if_match_check(if_match, working.etag)
        sensors = _sensors(working.config)
        removed = sensors.pop(_index_of(sensors, name))
        _target_sensors_write(
            device=device,
            working=working,
            recorder=recorder,
            sensors=sensors,
            user=user,
            change={"removed": [name]},
            event=EventTypeChoices.SENSOR_REMOVED,
            data={"name": name, "id": removed["id"]},
        )
