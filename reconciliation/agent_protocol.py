"""The agent's wire protocol: reading keys, bodies and reports. Pure parsing, no database.

Hot path: hand-written checks and orjson (PERF_NOTES: DRF parsing + serializers cost ~70x more here), but every
field the server stores is validated, and a bad report is refused whole before anything is written.
"""

import hashlib
import re
import uuid as uuid_lib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any, NamedTuple, TypeGuard, overload

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from devices.target_config import LEGACY_SENSORS_KEY, SENSORS_KEY
from sensors.validation import reported_sensor_parse, sensors_limit, sensors_limit_message
from sensorsync_project.strict_json import JSONBodyError, strict_json_loads
from sensorsync_project.validation import has_control_characters, is_int

TEXT_FIELD_MAX = 255
_INDEX = re.compile(r"\[\d+\]")
_KEYED_BY_NAME = re.compile(r"^(endpoints_health|protocol_adapters_health|sensor_health)\.[^.\[]+")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ProtocolError(Exception):
    """A request the agent protocol refuses; ``status`` and ``code`` become the JSON error answer."""

    def __init__(
        self, status: int, code: str, message: str, fields: dict | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    @property
    def reason(self) -> str:
        """A label for counting refusals: the error code, and for a validation error the first field named, with
        list indexes and sensor names folded (``validation_error:config.sensors[].enabled``)."""
        if not self.fields:
            return self.code
        field = next(iter(self.fields))
        if re.split(r"[.\[]", field, maxsplit=1)[0] not in REPORT_FIELDS:
            return f"{self.code}:body"  # e.g. a key that is not a uuid: its text is the client's, not a label
        field = _INDEX.sub("[]", field)
        field = _KEYED_BY_NAME.sub(r"\1.*", field)
        return f"{self.code}:{field[:80]}"


def api_key_from(headers: Mapping[str, str]) -> str | None:
    key = headers.get("X-Device-API-Key")
    if key:
        return key.strip()
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def body_inflate(raw: bytes, content_encoding: str, *, limit: int, what: str = "report") -> bytes:
    """The request body, gunzipped if the agent compressed it, refusing anything that inflates past ``limit``."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > limit:
            raise ProtocolError(413, "payload_too_large", f"The {what} is larger than {limit} bytes.")
        return raw
    if encoding != "gzip":
        raise ProtocolError(415, "unsupported_encoding", f"Content-Encoding '{encoding}' is not supported; use gzip.")
    # A gzip stream may hold several members back to back; each inflates under the one shared limit.
    parts: list[bytes] = []
    size, rest = 0, raw
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            raise ProtocolError(400, "malformed_request", f"The gzip body could not be decompressed: {exc}.") from exc
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise ProtocolError(413, "payload_too_large", f"The {what} decompresses to more than {limit} bytes.")
        if not inflater.eof:
            raise ProtocolError(400, "malformed_request", "The gzip body is truncated.")
        parts.append(part)
        rest = inflater.unused_data
        if not rest.strip(b"\0"):
            return b"".join(parts)


def json_parse(body: bytes) -> Any:
    try:
        return strict_json_loads(body)
    except JSONBodyError as exc:
        raise ProtocolError(400, "malformed_json", str(exc)) from exc


# What a report says about the device's configuration and health: its identity. A report whose identity equals
# the stored report's is "unchanged" whatever its facts and clock. ``config``, ``apps`` and each health map may be
# left out ("as before"), so the identity is a digest over each part's digest, the stored one for a missing part.
IDENTITY_PARTS = ("config", "apps", "endpoints_health", "protocol_adapters_health", "sensor_health")
HEALTH_SOURCES = ("sensor_health", "protocol_adapters_health", "endpoints_health")  # lowest precedence first
HEALTH_STATUSES = ("online", "offline", "disabled")
HEALTH_ERROR_MAX = 1000
QUALITY_MAX = 32

# Facts: what the agent says about the machine. Validated, kept as the device's latest, never part of identity.
FACT_NUMBERS = ("cpu_usage", "memory_usage", "memory_total", "storage_usage", "storage_total")
METRIC_KEYS = (*FACT_NUMBERS, "temperature", "top_processes", "network_interfaces")
NUMBER_MAX = 10**15
PROCESSES_MAX = 100
INTERFACES_MAX = 64
PROCESS_FIELDS = {"pid": "int", "name": "text", "cpu": "number", "mem": "number"}
INTERFACE_FIELDS = {
    "name": "text",
    "ip4": "text",
    "ip6": "text",
    "mac": "text",
    "type": "text",
    "operstate": "text",
    "default": "bool",
    "virtual": "bool",
}


REPORT_FIELDS = frozenset(
    (
        *IDENTITY_PARTS,
        *METRIC_KEYS,
        "version",
        "seq",
        "reported_at",
        "uptime",
        "is_online",
        "os_version",
        "agent_version",
        "local_ip",
        "report",
    )
)


class StoredReport(NamedTuple):
    """What a report is compared with: the stored report's identity digest and its parts' digests."""

    digest: str
    parts: dict


@dataclass(frozen=True, slots=True)
class Report:
    """One device's validated report, normalized.

    ``version`` None: a report from the agent's offline queue (it strips the version), acknowledged, never applied.
    ``config``/``apps``/``sensors`` None: left out, "as before". ``health``: the normalized map of each health
    source the report carried. ``facts``: the device fields it reported (see ``facts_parse``)."""

    version: int | None
    config: dict | None
    apps: dict | None
    sensors: list[dict] | None
    health: dict[str, dict]
    facts: dict
    clocks: dict[str, int]  # the clocks it carried: seq, reported_at (in microseconds); see ``_clock_parse``
    digest: str
    parts: dict

    @property
    def queued(self) -> bool:
        return self.version is None


@dataclass(frozen=True, slots=True)
class RepeatedReport:
    """A report whose identity equals the stored report's: the same configuration and health, only new facts and
    a new clock. The common case of a steady fleet. What the identity covers was validated when the stored report
    was accepted (and validation is a function of that content alone), so only facts, clock and health (which
    the identity is computed from) were read."""

    version: int
    facts: dict
    clocks: dict[str, int]
    digest: str
    whole: Callable[[], "Report"]  # the same report validated whole (when the stored one changed meanwhile)

    queued = False


def _text(value: Any, key: str, errors: dict, *, limit: int = TEXT_FIELD_MAX) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        errors[key] = [f"Must be a string of at most {limit} characters."]
        return None
    return value


def _number(value: Any, key: str, errors: dict, *, minimum: float | None = 0) -> float | int | None:
    if value is None:
        return None
    if type(value) not in (int, float) or abs(value) > NUMBER_MAX or (minimum is not None and value < minimum):
        bound = "a non-negative number" if minimum is not None else "a number"
        errors[key] = [f"Must be {bound} (at most {NUMBER_MAX:.0e} in size)."]
        return None
    return value


def _digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=32).hexdigest()


def identity_digest(version: int | None, parts: dict) -> str:
    return _digest({"version": version, "parts": parts})


def report_digest(report: dict) -> str:
    """The identity digest of a complete report (every part it leaves out counts as empty); for tools."""
    errors: dict = {}
    health = _health_parse(report, "", errors)
    return identity_digest(report.get("version"), _parts(report, health, {}))


def part_digest(part: str, value: Any) -> str:
    """The digest of one identity part: ``config`` and ``apps`` as sent, a health map (normalized) by what is
    identity in it (status, connection, quality, error), not by telemetry that moves on every poll."""
    if part in HEALTH_SOURCES:
        value = {name: [e["status"], e["connected"], e["quality"], e["lastError"]] for name, e in value.items()}
    return _digest(value)


def _parts(data: dict, health: dict[str, dict], stored_parts: dict) -> dict:
    """Each identity part's digest: the report's own where it carries the part, else the stored one."""
    parts = dict(stored_parts)
    for name in ("config", "apps"):
        if data.get(name) is not None:
            parts[name] = part_digest(name, data[name])
    for source, entries in health.items():
        parts[source] = part_digest(source, entries)
    return parts


def _clock_parse(data: dict, prefix: str, errors: dict) -> dict[str, int]:
    """The report's clocks: ``seq``, and ``reported_at`` in microseconds since the epoch; each one it carries.
    They are different clocks in different units, and a report older than the newest seen on either is stale. The
    real agent sends neither."""
    clocks = {}
    seq = data.get("seq")
    if seq is not None:
        if not is_int(seq) or seq < 0 or seq > 2**63 - 1:
            errors[f"{prefix}seq"] = ["Must be a non-negative integer."]
        else:
            clocks["seq"] = seq
    if data.get("reported_at") is not None:
        try:
            parsed = parse_datetime(data["reported_at"]) if isinstance(data["reported_at"], str) else None
        except ValueError:  # well formed but impossible, e.g. minute 60
            parsed = None
        skew = settings.SENSORSYNC_MAX_CLOCK_SKEW_SECONDS
        if parsed is None or parsed.tzinfo is None:
            errors[f"{prefix}reported_at"] = ["Must be an ISO 8601 timestamp with a time zone."]
        elif parsed > timezone.now() + timedelta(seconds=skew):
            # Accepted, it would make every later report stale until the key is rotated.
            errors[f"{prefix}reported_at"] = [f"Must not be more than {skew} s ahead of the server's clock."]
        else:
            clocks["reported_at"] = (parsed - EPOCH) // timedelta(microseconds=1)
    return clocks


def _record_field(kind: str, value: Any, key: str, errors: dict) -> Any:
    """One field of a record, checked against its kind (``PROCESS_FIELDS``, ``INTERFACE_FIELDS``)."""
    if kind == "text":
        return _text(value, key, errors)
    if kind == "number":
        return _number(value, key, errors, minimum=None)
    if kind == "int" and not (is_int(value) and 0 <= value <= 2**31 - 1):
        errors[key] = ["Must be a non-negative integer."]
    elif kind == "bool" and type(value) is not bool:
        errors[key] = ["Must be a boolean."]
    return value


def _records_parse(value: Any, key: str, errors: dict, *, fields: dict[str, str], limit: int) -> list[dict] | None:
    """A list of small objects (processes, network interfaces): known fields type-checked, others dropped."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > limit:
        errors[key] = [f"Must be a list of at most {limit} objects."]
        return None
    records = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            errors[f"{key}[{index}]"] = ["Must be an object."]
            continue
        records.append(
            {
                name: _record_field(kind, item[name], f"{key}[{index}].{name}", errors)
                for name, kind in fields.items()
                if item.get(name) is not None
            }
        )
    return records


def _system_info_parse(data: dict, prefix: str, errors: dict) -> dict:
    """The system info an agent sends once per start: its OS and agent versions and its local address."""
    info: dict = {}
    for key in ("os_version", "agent_version"):
        value = _text(data.get(key), f"{prefix}{key}", errors)
        if value is not None:
            info[key] = value
    local_ip = data.get("local_ip")
    if local_ip is not None:
        try:
            if not isinstance(local_ip, str):  # ip_address(123) would read an integer as 0.0.0.123
                raise TypeError
            info["ip_address"] = str(ip_address(local_ip))
        except (ValueError, TypeError):
            errors[f"{prefix}local_ip"] = ["Must be an IPv4 or IPv6 address."]
    return info


def _metrics_parse(data: dict, prefix: str, errors: dict) -> dict:
    """The metrics an agent sends every few minutes: usage figures, temperature, processes and interfaces."""
    metrics: dict = {}
    for key in FACT_NUMBERS:
        number = _number(data.get(key), f"{prefix}{key}", errors)
        if number is not None:
            metrics[key] = number
    temperature = _number(data.get("temperature"), f"{prefix}temperature", errors, minimum=-273.15)
    if temperature is not None:
        metrics["temperature"] = temperature
    for key, fields, limit in (
        ("top_processes", PROCESS_FIELDS, PROCESSES_MAX),
        ("network_interfaces", INTERFACE_FIELDS, INTERFACES_MAX),
    ):
        records = _records_parse(data.get(key), f"{prefix}{key}", errors, fields=fields, limit=limit)
        if records is not None:
            metrics[key] = records
    return metrics


def facts_parse(data: dict, prefix: str, errors: dict) -> dict:
    """The device fields a report sets: system info sent once per agent start, and the metrics sent every few
    minutes (replacing the device's previous metrics whole). Only what the report carries."""
    facts = _system_info_parse(data, prefix, errors)
    uptime = _number(data.get("uptime"), f"{prefix}uptime", errors)
    if uptime is not None:
        facts["uptime"] = float(uptime)
    metrics = _metrics_parse(data, prefix, errors)
    is_online = data.get("is_online")
    if is_online is not None and type(is_online) is not bool:
        errors[f"{prefix}is_online"] = ["Must be a boolean."]
    if metrics:
        if uptime is not None:
            metrics["uptime"] = float(uptime)
        if type(is_online) is bool:
            metrics["is_online"] = is_online
        facts["facts"] = metrics
    return facts


def _health_entry(
    status: str, connected: bool | None, quality: str, error: str, last_seen: str | None, error_count: int | None
) -> dict:
    return {
        "status": status,
        "connected": connected,
        "quality": quality,
        "lastError": error,
        "lastSeen": last_seen,
        "errorCount": error_count,
    }


def _health_fields(
    entry: dict, key: str, errors: dict, *, seen_field: str
) -> tuple[bool | None, str, str | None, int | None]:
    """(connected, lastError, lastSeen, errorCount) of one adapter health entry, type-checked."""
    connected = entry.get("connected")
    if connected is not None and type(connected) is not bool:
        errors[f"{key}.connected"] = ["Must be a boolean."]
        connected = None
    error = entry.get("lastError")
    if error is not None and not isinstance(error, str):
        errors[f"{key}.lastError"] = ["Must be a string or null."]
    error = error[:HEALTH_ERROR_MAX] if isinstance(error, str) else ""
    last_seen = entry.get(seen_field)
    if last_seen is not None:
        try:
            parsed = parse_datetime(last_seen) if isinstance(last_seen, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            errors[f"{key}.{seen_field}"] = ["Must be an ISO 8601 timestamp or null."]
            last_seen = None
        else:
            last_seen = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()
    error_count = entry.get("errorCount")
    if error_count is not None and not (is_int(error_count) and 0 <= error_count <= 2**31 - 1):
        errors[f"{key}.errorCount"] = ["Must be a non-negative integer."]
        error_count = None
    return connected, error, last_seen, error_count


def _sensor_key_ok(name: object, key: str, errors: dict) -> TypeGuard[str]:
    if isinstance(name, str) and 1 <= len(name) <= 255 and not has_control_characters(name):
        return True
    errors[key] = ["Sensor names must be 1 to 255 characters, no control characters."]
    return False


def _health_size(entries: Any) -> int:
    """How many sensors a health map speaks of (``protocol_adapters_health`` lists them per protocol)."""
    if not isinstance(entries, dict):
        return 0
    return sum(len(value) if isinstance(value, list) else 1 for value in entries.values())


def _status_from_connected(connected: bool | None) -> str:
    """What an entry without a (known) status says by ``connected``: online, offline, or nothing."""
    if connected is None:
        return ""
    return "online" if connected else "offline"


def _endpoint_entry(entry: dict, key: str, errors: dict) -> dict:
    """One ``endpoints_health`` entry (2025-11-22), normalized."""
    status = entry.get("status")
    if status is not None and not isinstance(status, str):
        errors[f"{key}.status"] = ["Must be a string."]
    quality = _text(entry.get("communicationQuality"), f"{key}.communicationQuality", errors, limit=QUALITY_MAX)
    connected, error, last_seen, error_count = _health_fields(entry, key, errors, seen_field="lastSeen")
    # The agent leaves ``status`` out for an adapter that never connected; a status this server does not know
    # (the agent grows) is not refused either: both are read from ``connected``.
    known = status if status in HEALTH_STATUSES else _status_from_connected(connected)
    return _health_entry(known, connected, quality or "", error, last_seen, error_count)


def _endpoints_health_parse(endpoints: Any, key: str, errors: dict) -> dict[str, dict] | None:
    """``endpoints_health`` (2025-11-22): keyed by sensor name."""
    if not isinstance(endpoints, dict):
        errors[key] = ["Must be an object mapping sensor names to objects."]
        return None
    entries = {}
    for name, entry in endpoints.items():
        entry_key = f"{key}.{name}"
        if not _sensor_key_ok(name, entry_key, errors):
            continue
        if not isinstance(entry, dict):
            errors[entry_key] = ["Must be an object."]
            continue
        entries[name] = _endpoint_entry(entry, entry_key, errors)
    return entries


def _adapters_health_parse(adapters: Any, key: str, errors: dict) -> dict[str, dict] | None:
    """``protocol_adapters_health`` (2025-11-06): {protocol: [{deviceName, connected, lastPoll, ...}]}."""
    if not isinstance(adapters, dict) or not all(isinstance(v, list) for v in adapters.values()):
        errors[key] = ["Must be an object mapping protocols to lists of device statuses."]
        return None
    entries = {}
    for protocol, statuses in adapters.items():
        for index, entry in enumerate(statuses):
            entry_key = f"{key}.{protocol}[{index}]"
            if not isinstance(entry, dict):
                errors[entry_key] = ["Must be an object."]
                continue
            name = entry.get("deviceName")
            if not _sensor_key_ok(name, f"{entry_key}.deviceName", errors):
                continue
            connected, error, last_seen, error_count = _health_fields(entry, entry_key, errors, seen_field="lastPoll")
            entries[name] = _health_entry(
                _status_from_connected(connected), connected, "", error, last_seen, error_count
            )
    return entries


def _legacy_health_parse(legacy: Any, key: str, errors: dict) -> dict[str, dict] | None:
    """``sensor_health``: the seed note's {name: {healthy, lastError}}; entries without ``healthy`` are dropped."""
    if not isinstance(legacy, dict) or not all(isinstance(v, dict) for v in legacy.values()):
        errors[key] = ["Must be an object mapping names to objects."]
        return None
    entries = {}
    for name, entry in legacy.items():
        healthy = entry.get("healthy")
        if type(healthy) is not bool:
            continue
        error = entry.get("lastError")
        error = error[:HEALTH_ERROR_MAX] if isinstance(error, str) else ""
        entries[name] = _health_entry("online" if healthy else "offline", healthy, "", error, None, None)
    return entries


_HEALTH_PARSERS: tuple[tuple[str, Callable[[Any, str, dict], dict[str, dict] | None]], ...] = (
    ("endpoints_health", _endpoints_health_parse),
    ("protocol_adapters_health", _adapters_health_parse),
    ("sensor_health", _legacy_health_parse),
)


def _health_parse(data: dict, prefix: str, errors: dict) -> dict[str, dict]:
    """Each health map the report carries, normalized to {sensor name: entry} (SPEC section 5):

    - ``endpoints_health`` (2025-11-22): keyed by sensor name, with ``status``, ``connected``,
      ``communicationQuality``, ``lastError``, ``lastSeen``, ``errorCount`` (other fields are telemetry, dropped);
    - ``protocol_adapters_health`` (2025-11-06): {protocol: [{deviceName, connected, lastPoll, errorCount,
      lastError}]};
    - ``sensor_health``: the seed note's {name: {healthy, lastError}}. The real agent sends sensor-publish
      statistics here, keyed by pipe name and without ``healthy``: those entries say nothing of a sensor and
      are dropped.
    """
    health: dict[str, dict] = {}
    for source in HEALTH_SOURCES:
        if _health_size(data.get(source)) > sensors_limit():
            errors[f"{prefix}{source}"] = [sensors_limit_message()]
            return health
    for source, parse in _HEALTH_PARSERS:
        value = data.get(source)
        if value is None:
            continue
        entries = parse(value, f"{prefix}{source}", errors)
        if entries is not None:
            health[source] = entries
    return health


def health_merge(health_by_source: dict[str, dict]) -> dict[str, dict]:
    """One entry per sensor name, from the most precise source that names it (``endpoints_health`` first)."""
    merged: dict[str, dict] = {}
    for source in HEALTH_SOURCES:
        merged.update(health_by_source.get(source) or {})
    return merged


def _config_parse(config: Any, prefix: str, errors: dict) -> tuple[dict, list[dict]]:
    """The reported configuration with its sensors normalized under ``sensors`` (SPEC section 5): read from
    ``config.sensors``, or ``config.protocolAdapterDevices`` only when ``sensors`` is absent."""
    if not isinstance(config, dict):
        errors[f"{prefix}config"] = ["Must be a JSON object."]
        return {}, []
    key = SENSORS_KEY if SENSORS_KEY in config else LEGACY_SENSORS_KEY
    raw_sensors = config.get(key)
    if raw_sensors is None:
        raw_sensors = []
    if not isinstance(raw_sensors, list):
        errors[f"{prefix}config.{key}"] = ["Must be a list of sensor objects."]
        raw_sensors = []
    elif len(raw_sensors) > sensors_limit():
        errors[f"{prefix}config.{key}"] = [sensors_limit_message()]
        raw_sensors = []
    sensors: list[dict] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_sensors):
        item = f"{prefix}config.{key}[{index}]."
        try:
            sensor = reported_sensor_parse(raw, prefix=item)
        except ValidationError as exc:
            errors.update(exc.message_dict)
            continue
        if sensor["name"] in names:
            errors[f"{item}name"] = [f"Duplicate sensor name '{sensor['name']}'."]
        names.add(sensor["name"])
        sensors.append(sensor)
    others = {name: value for name, value in config.items() if name not in (SENSORS_KEY, LEGACY_SENSORS_KEY)}
    return {**others, SENSORS_KEY: sensors}, sensors


@overload
def report_parse(data: Any, *, prefix: str = "", stored: None = None) -> Report: ...
@overload
def report_parse(data: Any, *, prefix: str = "", stored: StoredReport | None) -> Report | RepeatedReport: ...
def report_parse(data: Any, *, prefix: str = "", stored: StoredReport | None = None) -> Report | RepeatedReport:
    """One device's report, validated whole; or, if its identity equals the ``stored`` report's, a
    ``RepeatedReport`` with only its facts, clock and health validated (never without ``stored``)."""
    if not isinstance(data, dict):
        raise ValidationError({prefix.rstrip(".") or "report": ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    facts = facts_parse(data, prefix, errors)
    clocks = _clock_parse(data, prefix, errors)
    health = _health_parse(data, prefix, errors)

    version = data.get("version")
    if version is not None and (not is_int(version) or version < 0 or version > 2**31 - 1):
        errors[f"{prefix}version"] = ["Must be a non-negative integer (the target version the agent applied)."]
    if errors:
        raise ValidationError(errors)
    parts = _parts(data, health, stored.parts if stored else {})
    digest = identity_digest(version, parts)
    if stored is not None and version is not None and digest == stored.digest:
        return RepeatedReport(
            version=version, facts=facts, clocks=clocks, digest=digest, whole=lambda: report_parse(data, prefix=prefix)
        )

    config = sensors = None
    if data.get("config") is not None:
        config, sensors = _config_parse(data["config"], prefix, errors)
    apps = data.get("apps")
    if apps is not None and not isinstance(apps, dict):
        errors[f"{prefix}apps"] = ["Must be a JSON object."]
    if errors:
        raise ValidationError(errors)
    return Report(
        version=version,
        config=config,
        apps=apps,
        sensors=sensors,
        health=health,
        facts=facts,
        clocks=clocks,
        digest=digest,
        parts=parts,
    )


def reports_parse(
    data: Any, *, device_uuid: uuid_lib.UUID, stored: StoredReport | None = None
) -> Report | RepeatedReport:
    """The PATCH body: ``{"<uuid>": report}``; every uuid in it must be the authenticated device's.
    ``stored``: see ``report_parse``."""
    if not isinstance(data, dict) or not data:
        raise ProtocolError(
            400, "validation_error", 'The body must be an object keyed by device uuid: {"<uuid>": {...}}.'
        )
    reports = []
    for key, value in data.items():
        try:
            key_uuid = uuid_lib.UUID(key)
        except ValueError as exc:
            raise ProtocolError(
                400, "validation_error", f"'{key}' is not a device uuid.", {key: ["Must be a device uuid."]}
            ) from exc
        if key_uuid != device_uuid:
            raise ProtocolError(403, "permission_denied", "This key may only report for its own device.")
        reports.append(value)
    if len(reports) > 1:
        raise ProtocolError(400, "validation_error", "The body names the device more than once.")
    try:
        return report_parse(reports[0], prefix="", stored=stored)
    except ValidationError as exc:
        fields = exc.message_dict
        first = next(iter(fields.items()))
        raise ProtocolError(400, "validation_error", f"Invalid report. {first[0]}: {first[1][0]}", fields) from exc
