"""The one definition of a valid sensor object (SPEC section 3), shared by the API, the admin, the commands and
the agent report parser. Pure functions: plain data in, normalized plain data out, or ``ValidationError`` whose
``message_dict`` is keyed by the wire field name (with a path prefix for nested objects).
"""

import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from .choices import DeviceSensorProtocolChoices

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
POLL_INTERVAL_MIN = 100
POLL_INTERVAL_MAX = 86_400_000
POLL_INTERVAL_DEFAULT = 5000
SENSOR_FIELDS = ("id", "name", "protocol", "enabled", "pollInterval", "connection", "dataPoints", "metadata")
COMPARED_FIELDS = ("protocol", "enabled", "pollInterval", "connection", "dataPoints")
PROTOCOLS = frozenset(DeviceSensorProtocolChoices.values)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control_characters(text: str, *, allow: str = "") -> bool:
    """C0/C1 control characters (a terminal escape, a bell, a line break) have no place in a name."""
    return any(ch not in allow for ch in _CONTROL.findall(text))


def is_int(value: Any) -> bool:
    # JSON true/false are bools, which Python counts as ints; 5000.0 is a float: neither is an integer here.
    return type(value) is int


def _check_name(value: Any, errors: dict, key: str) -> None:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        errors[key] = ["Must be 1 to 255 characters of letters, digits, '.', '_' or '-'."]


def _check_data_points(value: Any, errors: dict, key: str) -> None:
    if not isinstance(value, list):
        errors[key] = ["Must be a list of objects."]
        return
    seen: set[str] = set()
    for index, point in enumerate(value):
        if not isinstance(point, dict):
            errors[f"{key}[{index}]"] = ["Must be an object."]
            continue
        name = point.get("name")
        if not isinstance(name, str) or not name:
            errors[f"{key}[{index}].name"] = ["Required: a non-empty string."]
        elif name in seen:
            errors[f"{key}[{index}].name"] = [f"Duplicate data point name '{name}' in this sensor."]
        else:
            seen.add(name)


@dataclass(frozen=True)
class _Rules:
    """How strict a sensor parse is: staff writes define sensors; agent reports describe what already runs."""

    name_charset: bool  # the SPEC's [A-Za-z0-9._-] (writes), or any 1-255 characters (reality)
    poll_range: tuple[int, int]
    poll_message: str
    defining_fields_required: bool  # protocol and connection must be sent (writes); reports fall back to defaults
    data_point_names: bool  # each data point an object with a unique name


_WRITE = _Rules(
    name_charset=True,
    poll_range=(POLL_INTERVAL_MIN, POLL_INTERVAL_MAX),
    poll_message=f"Must be an integer number of milliseconds from {POLL_INTERVAL_MIN} to {POLL_INTERVAL_MAX}.",
    defining_fields_required=True,
    data_point_names=True,
)
_REPORT = _Rules(
    name_charset=False,
    poll_range=(1, 2**31 - 1),
    poll_message="Must be a positive integer number of milliseconds.",
    defining_fields_required=False,
    data_point_names=False,
)


def _sensor_parse(data: dict, *, prefix: str, rules: _Rules, errors: dict[str, list[str]]) -> dict:
    """Check every field of a sensor object into ``errors`` and return it normalized, defaults filled in."""
    sensor_id = data.get("id")
    if sensor_id is not None:
        try:
            sensor_id = str(uuid.UUID(str(sensor_id)))
        except ValueError:
            errors[f"{prefix}id"] = ["Must be a UUID."]

    name = data.get("name")
    if rules.name_charset:
        if "name" not in data:
            errors[f"{prefix}name"] = ["This field is required."]
        else:
            _check_name(name, errors, f"{prefix}name")
    elif not isinstance(name, str) or not 1 <= len(name) <= 255 or has_control_characters(name):
        errors[f"{prefix}name"] = ["Required: a string of 1 to 255 characters, no control characters."]

    protocol = data.get("protocol")
    if rules.defining_fields_required and "protocol" not in data:
        errors[f"{prefix}protocol"] = ["This field is required."]
    elif not isinstance(protocol, str) or protocol not in PROTOCOLS:
        errors[f"{prefix}protocol"] = [f"Must be one of: {', '.join(sorted(PROTOCOLS))}."]

    enabled = data.get("enabled", True)
    if type(enabled) is not bool:
        errors[f"{prefix}enabled"] = ["Must be a boolean."]

    poll = data.get("pollInterval", POLL_INTERVAL_DEFAULT)
    if not is_int(poll) or not rules.poll_range[0] <= poll <= rules.poll_range[1]:
        errors[f"{prefix}pollInterval"] = [rules.poll_message]

    if rules.defining_fields_required and "connection" not in data:
        errors[f"{prefix}connection"] = ["This field is required."]
    connection = data.get("connection", {})
    if not isinstance(connection, dict):
        errors[f"{prefix}connection"] = ["Must be a JSON object."]

    data_points = data.get("dataPoints", [])
    if rules.data_point_names:
        _check_data_points(data_points, errors, f"{prefix}dataPoints")
    elif not isinstance(data_points, list):
        errors[f"{prefix}dataPoints"] = ["Must be a list."]

    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        errors[f"{prefix}metadata"] = ["Must be a JSON object."]

    return {
        "id": sensor_id,
        "name": name,
        "protocol": protocol,
        "enabled": enabled,
        "pollInterval": poll,
        "connection": connection,
        "dataPoints": data_points,
        "metadata": metadata,
    }


def sensor_validate(data: Any, *, prefix: str = "", allow_id: bool = False) -> dict:
    """Validate a complete sensor object from a staff write and return it normalized, defaults filled in.

    ``allow_id`` accepts a client-supplied ``id`` (a full target-state document round-trips ids); elsewhere the
    server assigns ids and the caller strips a matching one before calling. Unknown fields are refused.
    """
    if not isinstance(data, dict):
        raise ValidationError({prefix.rstrip(".") or "sensor": ["Must be a JSON object."]})
    allowed = SENSOR_FIELDS if allow_id else SENSOR_FIELDS[1:]
    errors: dict[str, list[str]] = {
        f"{prefix}{key}": ["Assigned by the server; it cannot be set." if key == "id" else "Unknown field."]
        for key in data
        if key not in allowed
    }
    sensor = _sensor_parse(data, prefix=prefix, rules=_WRITE, errors=errors)
    if errors:
        raise ValidationError(errors)
    return sensor


def reported_sensor_parse(data: Any, *, prefix: str) -> dict:
    """Parse one sensor the agent reports as running. Reality is not refused for extra fields, but every field
    the server stores must have the right type (the read model's constraints hold for reported rows too)."""
    if not isinstance(data, dict):
        raise ValidationError({prefix.rstrip("."): ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    sensor = _sensor_parse(data, prefix=prefix, rules=_REPORT, errors=errors)
    if errors:
        raise ValidationError(errors)
    return sensor


def sensors_same(a: dict, b: dict) -> bool:
    """SPEC section 6's "same": metadata is left out because the agent may enrich it."""
    return all(a[key] == b[key] for key in COMPARED_FIELDS)


def sensors_differences(desired: dict, running: dict) -> list[str]:
    return [key for key in COMPARED_FIELDS if desired[key] != running[key]]


def target_config_validate(config: Any, *, previous: dict) -> dict:
    """Validate a whole target configuration document (PUT target-state).

    Sensors keep their ids: a sensor sent without ``id`` takes the id its name had in ``previous``, or a new one.
    Top-level keys other than ``protocolAdapterDevices`` belong to the agent and pass through untouched.
    """
    if not isinstance(config, dict):
        raise ValidationError({"config": ["Must be a JSON object."]})
    sensors = config.get("protocolAdapterDevices", [])
    if not isinstance(sensors, list):
        raise ValidationError({"config.protocolAdapterDevices": ["Must be a list of sensor objects."]})
    previous_ids = {s["name"]: s["id"] for s in previous.get("protocolAdapterDevices", [])}
    errors: dict[str, list[str]] = {}
    normalized: list[dict] = []
    names: set[str] = set()
    ids: set[str] = set()
    for index, raw in enumerate(sensors):
        prefix = f"config.protocolAdapterDevices[{index}]."
        try:
            sensor = sensor_validate(raw, prefix=prefix, allow_id=True)
        except ValidationError as exc:
            errors.update(exc.message_dict)
            continue
        if sensor["name"] in names:
            errors[f"{prefix}name"] = [f"Duplicate sensor name '{sensor['name']}'."]
            continue
        sensor["id"] = sensor["id"] or previous_ids.get(sensor["name"]) or str(uuid.uuid4())
        if sensor["id"] in ids:
            errors[f"{prefix}id"] = [f"Duplicate sensor id '{sensor['id']}'."]
            continue
        names.add(sensor["name"])
        ids.add(sensor["id"])
        normalized.append(sensor)
    if errors:
        raise ValidationError(errors)
    return {**config, "protocolAdapterDevices": normalized}
