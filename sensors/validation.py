"""The one definition of a valid sensor object (SPEC section 3), shared by the API, the admin, the commands and
the agent report parser. Pure functions: plain data in, normalized plain data out, or ``ValidationError`` whose
``message_dict`` is keyed by the wire field name (with a path prefix for nested objects).
"""

import re
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from devices.target_config import LEGACY_SENSORS_KEY, SENSORS_KEY, config_sensors
from sensorsync_project.strict_json import JSONBodyError, strict_json_loads
from sensorsync_project.validation import has_control_characters, is_int

from .choices import DeviceSensorProtocolChoices

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
POLL_INTERVAL_MIN = 100
POLL_INTERVAL_MAX = 86_400_000
POLL_INTERVAL_DEFAULT = 5000
SENSOR_FIELDS = ("id", "name", "protocol", "enabled", "pollInterval", "connection", "dataPoints", "metadata")
COMPARED_FIELDS = ("protocol", "enabled", "pollInterval", "connection", "dataPoints")
# What a report may leave out of a running sensor without it "differing" (the 2025-11-22 agent sends no
# dataPoints). The protocol is never optional: it names the adapter, and the row cannot be shown without it.
UNREPORTABLE_FIELDS = ("enabled", "pollInterval", "connection", "dataPoints")
PROTOCOLS = frozenset(DeviceSensorProtocolChoices.values)


def sensors_limit() -> int:
    """The most sensors one device may have, desired or reported: it bounds the work one request can cause (the
    rows a report reconciles, the events it appends: at most about two per sensor)."""
    return settings.SENSORSYNC_MAX_SENSORS_PER_DEVICE


def sensors_limit_message() -> str:
    return f"At most {sensors_limit()} sensors per device (SENSORSYNC_MAX_SENSORS_PER_DEVICE)."


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


REPORTED_POLL_MESSAGE = "Must be a positive integer number of milliseconds."
REPORTED_POLL_MAX = 2**31 - 1


def _sensor_id_parse(value: Any, key: str, errors: dict[str, list[str]]) -> Any:
    """A sensor's id as a UUID's canonical text (None without one; as sent, with an error, if it is no UUID)."""
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        errors[key] = ["Must be a UUID."]
        return value


def _check_protocol(data: dict, key: str, errors: dict[str, list[str]]) -> None:
    if "protocol" not in data:
        errors[key] = ["This field is required."]
    elif not isinstance(data["protocol"], str) or data["protocol"] not in PROTOCOLS:
        errors[key] = [f"Must be one of: {', '.join(sorted(PROTOCOLS))}."]


def _sensor_parse(data: dict, *, prefix: str, errors: dict[str, list[str]]) -> dict:
    """Check every field of a staff-defined sensor object into ``errors``; return it normalized, defaults filled in."""
    sensor_id = _sensor_id_parse(data.get("id"), f"{prefix}id", errors)

    if "name" not in data:
        errors[f"{prefix}name"] = ["This field is required."]
    else:
        _check_name(data["name"], errors, f"{prefix}name")

    protocol = data.get("protocol")
    _check_protocol(data, f"{prefix}protocol", errors)

    enabled = data.get("enabled", True)
    if type(enabled) is not bool:
        errors[f"{prefix}enabled"] = ["Must be a boolean."]

    poll = data.get("pollInterval", POLL_INTERVAL_DEFAULT)
    if not is_int(poll) or not POLL_INTERVAL_MIN <= poll <= POLL_INTERVAL_MAX:
        errors[f"{prefix}pollInterval"] = [
            f"Must be an integer number of milliseconds from {POLL_INTERVAL_MIN} to {POLL_INTERVAL_MAX}."
        ]

    if "connection" not in data:
        errors[f"{prefix}connection"] = ["This field is required."]
    connection = data.get("connection", {})
    if not isinstance(connection, dict):
        errors[f"{prefix}connection"] = ["Must be a JSON object."]

    data_points = data.get("dataPoints", [])
    _check_data_points(data_points, errors, f"{prefix}dataPoints")

    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        errors[f"{prefix}metadata"] = ["Must be a JSON object."]

    return {
        "id": sensor_id,
        "name": data.get("name"),
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
    sensor = _sensor_parse(data, prefix=prefix, errors=errors)
    if errors:
        raise ValidationError(errors)
    return sensor


def _reported_enabled(value: Any, key: str, errors: dict) -> bool | None:
    # The 2025-11-22 agent stores ``enabled`` as an SQLite integer and reports it as 0 or 1.
    if type(value) is bool:
        return value
    if is_int(value) and value in (0, 1):
        return bool(value)
    errors[key] = ["Must be a boolean (or 0 or 1)."]
    return None


def _reported_connection(data: dict, prefix: str, errors: dict) -> dict | None:
    """``connection`` as an object, or the 2025-11-22 agent's ``connectionString``: that object as JSON text."""
    if "connection" in data:
        connection = data["connection"]
        if not isinstance(connection, dict):
            errors[f"{prefix}connection"] = ["Must be a JSON object."]
        return connection
    text = data.get("connectionString")
    if text is None:
        return None
    try:
        connection = strict_json_loads(text.encode()) if isinstance(text, str) else None
    except (JSONBodyError, UnicodeEncodeError):
        connection = None
    if not isinstance(connection, dict):
        errors[f"{prefix}connectionString"] = ["Must be a JSON object encoded as a string."]
    return connection


def reported_sensor_parse(data: Any, *, prefix: str) -> dict:
    """Parse one sensor the agent reports as running, in either agent generation's shape (SPEC section 5).

    Reality is not refused for extra fields or the agent's own ``id`` (ignored: sensors are matched by name), but
    every field the server stores must have the right type. A field the agent did not report comes back as None:
    it is compared with nothing (``sensors_differences``) and the row lists it as unreported."""
    if not isinstance(data, dict):
        raise ValidationError({prefix.rstrip("."): ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    name = data.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 255 or has_control_characters(name):
        errors[f"{prefix}name"] = ["Required: a string of 1 to 255 characters, no control characters."]

    protocol = data.get("protocol")
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        errors[f"{prefix}protocol"] = [f"Must be one of: {', '.join(sorted(PROTOCOLS))}."]

    enabled = data.get("enabled")
    if enabled is not None:
        enabled = _reported_enabled(enabled, f"{prefix}enabled", errors)

    poll = data.get("pollInterval")
    if poll is not None and (not is_int(poll) or not 1 <= poll <= REPORTED_POLL_MAX):
        errors[f"{prefix}pollInterval"] = [REPORTED_POLL_MESSAGE]

    connection = _reported_connection(data, prefix, errors)

    data_points = data.get("dataPoints")
    if data_points is not None and not isinstance(data_points, list):
        errors[f"{prefix}dataPoints"] = ["Must be a list."]

    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        errors[f"{prefix}metadata"] = ["Must be a JSON object."]

    if errors:
        raise ValidationError(errors)
    return {
        "id": None,
        "name": name,
        "protocol": protocol,
        "enabled": enabled,
        "pollInterval": poll,
        "connection": connection,
        "dataPoints": data_points,
        "metadata": metadata,
    }


def unreported_fields(running: dict) -> list[str]:
    """The fields of a reported sensor that the agent left out (None after ``reported_sensor_parse``)."""
    return [key for key in UNREPORTABLE_FIELDS if running[key] is None]


def sensors_differences(desired: dict, running: dict) -> list[str]:
    """SPEC section 6's "same", field by field: metadata is left out because the agent may enrich it, and a field
    the agent did not report (None) is compared with nothing."""
    return [key for key in COMPARED_FIELDS if running[key] is not None and desired[key] != running[key]]


def _target_sensors_key(config: dict) -> str:
    """The key a target document keeps its sensors under: ``sensors``, or the seed note's name for it; not both."""
    if LEGACY_SENSORS_KEY not in config:
        return SENSORS_KEY
    if SENSORS_KEY in config:
        raise ValidationError(
            {
                f"config.{LEGACY_SENSORS_KEY}": [
                    f"The old name of config.{SENSORS_KEY}; send the sensors under config.{SENSORS_KEY} only."
                ]
            }
        )
    return LEGACY_SENSORS_KEY


def target_config_validate(config: Any, *, previous: dict) -> dict:
    """Validate a whole target configuration document (PUT target-state).

    The sensors go under ``sensors``; a document that still names them ``protocolAdapterDevices`` (the seed note's
    key) is converted, and one that sends both is refused as ambiguous. Sensors keep their ids: a sensor sent
    without ``id`` takes the id its name had in ``previous``, or a new one. Other top-level keys belong to the agent
    and pass through untouched.
    """
    if not isinstance(config, dict):
        raise ValidationError({"config": ["Must be a JSON object."]})
    key = _target_sensors_key(config)
    sensors = config.get(key, [])
    if not isinstance(sensors, list):
        raise ValidationError({f"config.{key}": ["Must be a list of sensor objects."]})
    if len(sensors) > sensors_limit():
        raise ValidationError({f"config.{key}": [sensors_limit_message()]})
    previous_ids = {s["name"]: s["id"] for s in config_sensors(previous)}
    errors: dict[str, list[str]] = {}
    normalized: list[dict] = []
    names: set[str] = set()
    ids: set[str] = set()
    for index, raw in enumerate(sensors):
        prefix = f"config.{key}[{index}]."
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
    others = {name: value for name, value in config.items() if name not in (SENSORS_KEY, LEGACY_SENSORS_KEY)}
    return {**others, SENSORS_KEY: normalized}
