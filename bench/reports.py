"""What the load generator sends as reports: the agent's body, gzip-compressed, with a fresh ``uptime``.

A real agent's consecutive reports differ only in facts such as ``uptime``, which the server's digest leaves out,
so an unchanged report is a byte-different body with the stored digest. Like the real agent's, they carry no
``seq`` or ``reported_at`` (a report with a newer clock costs a write even when it changes nothing). wrk's Lua
cannot deflate, so every body is split in two gzip members (RFC 1952 allows several back to back; the server
inflates them all under one size cap):

- the prefix, ``{"<uuid>":{...,"sensor_health":{...},"uptime":``, compressed here once per device and variant;
- the tail, ``<uptime>}}``, a few bytes that wrk wraps per request in a *stored* (uncompressed)
  deflate block with its CRC-32 (``bench/lua/agent.lua``, mirrored by ``gzip_stored_member`` below).

Variant 0 is the target's sensors exactly; variant 1 adds ``{"benchVariant": 1}`` to every sensor's metadata.
Metadata is not part of "same" (SPEC section 6), so both variants keep every sensor ``deployed``, yet switching
between them rewrites every sensor row: a changed report of N sensors with no status or drift noise.
"""

import gzip
import struct
import uuid as uuid_lib
import zlib

import orjson

from reconciliation.agent_protocol import Report, json_parse, report_digest, reports_parse

from . import fleet

AGENT_VERSION = "bench-1.0"
OS_VERSION = "Debian GNU/Linux 12 (bookworm)"
REPORT_PATH = "/api/v1/device/state"
GZIP_LEVEL = 6  # what the simulator (and gzip's default) uses
VARIANTS = (0, 1)
_TAIL_OPEN = b',"uptime":'
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, unknown OS


def report_entry(
    *, sensors: list[dict], version: int, variant: int, local_ip: str = "10.0.0.10", generation: int = 0
) -> dict:
    """One device's report of running ``sensors`` (the target's sensor objects, ids included) at ``version``,
    without ``uptime`` (it goes in the tail). Its health is what the agent generation sends (``bench.fleet``):
    ``sensor_health`` for generation 0 (2025-11-06), ``endpoints_health`` for generation 1 (2025-11-22), so the
    fleet model's metrics reports, which carry it again, leave the stored report unchanged."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    running = fleet.variant_sensors(sensors, variant)
    entry = {
        "version": version,
        "config": {"sensors": running},
        "apps": {},
        "os_version": OS_VERSION,
        "agent_version": AGENT_VERSION,
        "local_ip": local_ip,
    }
    if generation:
        entry["endpoints_health"] = fleet.endpoints_health(s["name"] for s in running)
    else:
        entry["sensor_health"] = {s["name"]: {"healthy": True} for s in running}
    return entry


def entry_digest(entry: dict) -> str:
    """The digest the server stores for this report (``uptime`` never counts)."""
    return report_digest(entry)


def entry_parts(device_uuid: str, entry: dict) -> dict:
    """The identity parts' digests the server stores for this report (``DeviceCurrentState.parts``): what a later
    report that leaves a part out (the 2025-11-22 agent's ``config``) is compared with."""
    body = orjson.dumps({str(device_uuid): {**entry, "uptime": 1}})
    report = reports_parse(json_parse(body), device_uuid=uuid_lib.UUID(str(device_uuid)))
    if not isinstance(report, Report):
        raise TypeError("a report parsed without a stored one is a full Report")
    return report.parts


def body_prefix(device_uuid: str, entry: dict) -> bytes:
    """The report's JSON up to the value of ``uptime``: ``{"<uuid>":{...,"uptime":``."""
    if "uptime" in entry:
        raise ValueError("uptime belongs to the tail")
    whole = orjson.dumps({str(device_uuid): entry})
    assert whole.endswith(b"}}")
    return whole[:-2] + _TAIL_OPEN


def body_prefix_json(device_uuid: str, entry_json: bytes) -> bytes:
    """``body_prefix`` of an entry already serialized by orjson (the same bytes)."""
    if not entry_json.endswith(b"}") or b'"uptime":' in entry_json:
        raise ValueError("an entry without uptime, as a JSON object")
    return b'{"%s":' % str(device_uuid).encode("ascii") + entry_json[:-1] + _TAIL_OPEN


def body_tail(uptime: int) -> bytes:
    return b"%d}}" % uptime


def gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def gzip_stored_member(data: bytes) -> bytes:
    """A gzip member holding ``data`` in one stored deflate block: what the Lua side builds per request."""
    if len(data) > 0xFFFF:
        raise ValueError("a stored block holds at most 65535 bytes")
    size = len(data)
    block = b"\x01" + struct.pack("<HH", size, size ^ 0xFFFF) + data
    return _GZIP_HEADER + block + struct.pack("<II", zlib.crc32(data), size)


def report_body(prefix_gz: bytes, *, uptime: int) -> bytes:
    """The body as sent on the wire: the compressed prefix and a stored member with ``uptime``."""
    return prefix_gz + gzip_stored_member(body_tail(uptime))


def inflate_all(body: bytes) -> bytes:
    """Every member of a gzip stream, inflated (for checks; the server uses its own ``body_inflate``)."""
    return gzip.decompress(body)
