"""The agent's wire protocol: reading keys, bodies and reports. Pure parsing, no database.

Hot path: hand-written checks and orjson (PERF_NOTES: DRF parsing + serializers cost ~70x more here), but every
field the server stores is validated, and a bad report is refused whole before anything is written.
"""

import hashlib
import uuid as uuid_lib
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import orjson
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

from sensors.validation import is_int, reported_sensor_parse
from sensorsync_project.strict_json import JSONBodyError, strict_json_loads

TEXT_FIELD_MAX = 255
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


def api_key_from(headers) -> str | None:
    key = headers.get("X-Device-API-Key")
    if key:
        return key.strip()
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def body_inflate(raw: bytes, content_encoding: str, *, limit: int) -> bytes:
    """The request body, gunzipped if the agent compressed it, refusing anything that inflates past ``limit``."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > limit:
            raise ProtocolError(413, "payload_too_large", f"The report is larger than {limit} bytes.")
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
            raise ProtocolError(413, "payload_too_large", f"The report decompresses to more than {limit} bytes.")
        if not inflater.eof:
            raise ProtocolError(400, "malformed_request", "The gzip body is truncated.")
        parts.append(part)
        rest = inflater.unused_data
        if not rest.strip(b"\0"):
            return b"".join(parts)


def json_parse(body: bytes):
    try:
        return strict_json_loads(body)
    except JSONBodyError as exc:
        raise ProtocolError(400, "malformed_json", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Report:
    """One device's validated report, normalized."""

    version: int
    config: dict
    apps: dict
    sensors: list[dict]
    sensor_health: dict
    os_version: str | None
    agent_version: str | None
    local_ip: str | None
    uptime: int | None
    order: int | None  # seq, or reported_at in microseconds: reports older than the last one are stale
    digest: str


@dataclass(frozen=True, slots=True)
class RepeatedReport:
    """A report whose digest equals the stored report's: the same configuration and health, only a new clock.

    The common case of a steady fleet. What the digest covers was validated when the stored report was accepted
    (and validation is a function of that content alone), so only what the digest leaves out is read here:
    ``uptime``, ``seq`` and ``reported_at``, with the same rules as a full report."""

    version: int
    uptime: int | None
    order: int | None
    digest: str


def _text(value, key: str, errors: dict) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > TEXT_FIELD_MAX:
        errors[key] = [f"Must be a string of at most {TEXT_FIELD_MAX} characters."]
        return None
    return value


def report_digest(report: dict) -> str:
    """Digest of what the report says about the device's configuration and health (not of its clock)."""
    canonical = {key: value for key, value in report.items() if key not in ("uptime", "seq", "reported_at")}
    return hashlib.blake2b(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=32).hexdigest()


def _clock_parse(data: dict, prefix: str, errors: dict) -> tuple[int | None, int | None]:
    """``uptime`` and the report's order (``seq``, or ``reported_at`` in microseconds): what the digest leaves out."""
    uptime = data.get("uptime")
    if uptime is not None and (not is_int(uptime) or uptime < 0 or uptime > 2**63 - 1):
        errors[f"{prefix}uptime"] = ["Must be a non-negative integer number of seconds."]

    order = None
    seq = data.get("seq")
    if seq is not None:
        if not is_int(seq) or seq < 0 or seq > 2**63 - 1:
            errors[f"{prefix}seq"] = ["Must be a non-negative integer."]
        else:
            order = seq
    elif data.get("reported_at") is not None:
        try:
            parsed = parse_datetime(data["reported_at"]) if isinstance(data["reported_at"], str) else None
        except ValueError:  # well formed but impossible, e.g. minute 60
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            errors[f"{prefix}reported_at"] = ["Must be an ISO 8601 timestamp with a time zone."]
        else:
            order = (parsed - EPOCH) // timedelta(microseconds=1)
    return uptime, order


def report_parse(data, *, prefix: str = "", stored_digest: str | None = None) -> Report | RepeatedReport:
    """One device's report, validated whole; or, if its digest equals ``stored_digest`` (the device's stored report),
    a ``RepeatedReport`` with only its clock validated."""
    if not isinstance(data, dict):
        raise ValidationError({prefix.rstrip(".") or "report": ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    digest = report_digest(data)
    if stored_digest is not None and digest == stored_digest:
        uptime, order = _clock_parse(data, prefix, errors)
        if errors:
            raise ValidationError(errors)
        return RepeatedReport(version=data["version"], uptime=uptime, order=order, digest=digest)

    version = data.get("version")
    if not is_int(version) or version < 0 or version > 2**31 - 1:
        errors[f"{prefix}version"] = ["Required: a non-negative integer (the target version the agent applied)."]

    config = data.get("config", {})
    sensors: list[dict] = []
    if not isinstance(config, dict):
        errors[f"{prefix}config"] = ["Must be a JSON object."]
    else:
        raw_sensors = config.get("protocolAdapterDevices", [])
        if not isinstance(raw_sensors, list):
            errors[f"{prefix}config.protocolAdapterDevices"] = ["Must be a list of sensor objects."]
        else:
            names: set[str] = set()
            for index, raw in enumerate(raw_sensors):
                item = f"{prefix}config.protocolAdapterDevices[{index}]."
                try:
                    sensor = reported_sensor_parse(raw, prefix=item)
                except ValidationError as exc:
                    errors.update(exc.message_dict)
                    continue
                if sensor["name"] in names:
                    errors[f"{item}name"] = [f"Duplicate sensor name '{sensor['name']}'."]
                names.add(sensor["name"])
                sensors.append(sensor)

    apps = data.get("apps", {})
    if not isinstance(apps, dict):
        errors[f"{prefix}apps"] = ["Must be a JSON object."]

    health = data.get("sensor_health", {})
    if not isinstance(health, dict) or not all(isinstance(v, dict) for v in health.values()):
        errors[f"{prefix}sensor_health"] = ["Must be an object mapping sensor names to objects."]

    os_version = _text(data.get("os_version"), f"{prefix}os_version", errors)
    agent_version = _text(data.get("agent_version"), f"{prefix}agent_version", errors)
    local_ip = data.get("local_ip")
    if local_ip is not None:
        try:
            if not isinstance(local_ip, str):  # ip_address(123) would read an integer as 0.0.0.123
                raise TypeError
            local_ip = str(ip_address(local_ip))
        except (ValueError, TypeError):
            errors[f"{prefix}local_ip"] = ["Must be an IPv4 or IPv6 address."]
            local_ip = None

    uptime, order = _clock_parse(data, prefix, errors)

    if errors:
        raise ValidationError(errors)
    return Report(
        version=version,
        config={**config, "protocolAdapterDevices": sensors},
        apps=apps,
        sensors=sensors,
        sensor_health=health,
        os_version=os_version,
        agent_version=agent_version,
        local_ip=local_ip,
        uptime=uptime,
        order=order,
        digest=digest,
    )


def reports_parse(data, *, device_uuid: uuid_lib.UUID, stored_digest: str | None = None) -> Report | RepeatedReport:
    """The PATCH body: ``{"<uuid>": report}``; every uuid in it must be the authenticated device's.
    ``stored_digest``: see ``report_parse``."""
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
        return report_parse(reports[0], prefix="", stored_digest=stored_digest)
    except ValidationError as exc:
        fields = exc.message_dict
        first = next(iter(fields.items()))
        raise ProtocolError(400, "validation_error", f"Invalid report. {first[0]}: {first[1][0]}", fields) from exc
