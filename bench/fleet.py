"""The real agent's fleet model: what a fleet of Iotistica agents sends, minute by minute, and the files the load
generators read to send it.

Per agent (``bench/wire/``, recorded from the unmodified agent, README there):

- a poll of its target state every 60 s, with the ETag it was given: 304, unless its target changed;
- a report every 60 s: unchanged. The 2025-11-06 agent sends its ``config`` in every report, the 2025-11-22 agent
  leaves it out when it did not change (and ``endpoints_health`` when that did not change);
- a metrics report every 300 s (``cpu_usage``, ``memory_*``, ``storage_*``, a float ``uptime``,
  ``top_processes``, ``network_interfaces``; the 2025-11-22 agent adds ``endpoints_health``);
- a target change for 1% of the devices per minute, made on the server (``bench.prepare changer``, the product's
  own service) ahead of the device's next poll: that poll is answered 200 and the device's next report carries the
  new sensors and version (a changed report).

Every device has its own phase for each schedule, drawn at random, so the fleet's requests are spread evenly.
Half the devices are of each generation (by template: even templates 2025-11-06, odd ones 2025-11-22).

A body is three gzip members back to back (RFC 1952 allows it; the server inflates them all under one cap):

1. ``{"<uuid>":{"version":<n>,"apps":{},"is_online":true`` in a stored (uncompressed) deflate block, built per
   request by the load generator (the version moves with target changes);
2. the device's ``,"config":{"sensors":[...]}`` of the variant it runs, compressed once here (2025-11-06: every
   report; 2025-11-22: changed reports only);
3. the closing tail, compressed once here per template: ``}}`` for a plain report, the metrics fields and ``}}``
   for a metrics report.

Pure: no Django. The schedule, the body layout and the file formats are unit-tested (``tests/bench``).
"""

import copy
import gzip
import json
import math
import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

WIRE = Path(__file__).resolve().parent / "wire"
GENERATIONS = ("2025-11-06", "2025-11-22")
POLL_S, REPORT_S, METRICS_S = 60, 60, 300
CHANGE_SHARE = 0.01  # of the devices, per minute
CHANGE_LEAD_S = 10  # the changer writes a device's new target this long before the poll that fetches it
MAGIC = b"SSFLEET1"
GZIP_LEVEL = 6

# Event kinds, one character each in the schedule file.
POLL = "P"  # 304 expected
POLL_CHANGED = "C"  # 200 expected: the target changed since the last poll
REPORT = "R"  # unchanged
METRICS = "M"  # metrics report, nothing else changed
CHANGED = "X"  # the first report after a changed poll: new sensors, new version
KINDS = (POLL, POLL_CHANGED, REPORT, METRICS, CHANGED)
REPORT_KINDS = (REPORT, METRICS, CHANGED)


def requests_per_second(devices: int) -> float:
    """What a fleet of ``devices`` real agents sends: a poll and a report a minute, a metrics report per 5 min."""
    return devices * (1 / POLL_S + 1 / REPORT_S + 1 / METRICS_S)


# --------------------------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Event:
    t_ms: int
    device: int
    kind: str


@dataclass(frozen=True, order=True)
class Change:
    t_ms: int  # when the changer writes it (the new target: the other sensors variant than the target has)
    device: int


@dataclass
class Schedule:
    devices: int
    duration_s: int
    events: list[Event]
    changes: list[Change]
    counts: dict[str, int] = field(default_factory=dict)


def schedule_build(
    devices: int,
    duration_s: int,
    *,
    seed: int = 1,
    change_share: float = CHANGE_SHARE,
    lead_s: int = CHANGE_LEAD_S,
) -> Schedule:
    """Every request of ``devices`` agents during ``duration_s`` seconds, in time order.

    Each device polls at ``phase_poll + 60 k``, reports at ``phase_report + 60 k`` and sends metrics at
    ``phase_metrics + 300 k``. In each minute ``round(change_share x devices)`` devices, drawn at random, get a
    new target ``lead_s`` before their poll of that minute (a poll earlier than ``lead_s`` into the run is not
    chosen: the change would precede the run). That poll is a ``C``; the device's next report is an ``X``."""
    if devices < 1 or duration_s < 1:
        raise ValueError("devices and duration_s must be at least 1")
    rng = random.Random(seed)
    poll = [rng.randrange(POLL_S * 1000) for _ in range(devices)]
    report = [rng.randrange(REPORT_S * 1000) for _ in range(devices)]
    metrics = [rng.randrange(METRICS_S * 1000) for _ in range(devices)]
    changes = _changes(rng, poll, duration_s, change_share, lead_s)
    changed_polls = {(c.device, c.t_ms + lead_s * 1000) for c in changes}
    events = _events(poll, report, metrics, duration_s * 1000, changed_polls)
    counts = {kind: 0 for kind in KINDS}
    for event in events:
        counts[event.kind] += 1
    return Schedule(devices, duration_s, events, changes, counts)


def _changes(rng: random.Random, poll: list[int], duration_s: int, share: float, lead_s: int) -> list[Change]:
    """Each minute, ``round(share x devices)`` devices drawn at random get a new target ``lead_s`` before their poll
    of that minute."""
    devices, end_ms = len(poll), duration_s * 1000
    changes: set[Change] = set()
    for minute in range(math.ceil(duration_s / 60)):
        for d in rng.sample(range(devices), min(round(share * devices), devices)):
            t = minute * 60_000 + poll[d]
            if lead_s * 1000 <= t < end_ms:
                changes.add(Change(t - lead_s * 1000, d))
    return sorted(changes)


def _events(
    poll: list[int], report: list[int], metrics: list[int], end_ms: int, changed_polls: set[tuple[int, int]]
) -> list[Event]:
    """Every request in time order; a changed poll is a ``C``, the device's next report after it an ``X``."""
    events: list[Event] = []
    for d in range(len(poll)):
        events += [
            Event(t, d, POLL_CHANGED if (d, t) in changed_polls else POLL)
            for t in range(poll[d], end_ms, POLL_S * 1000)
        ]
        events += [Event(t, d, REPORT) for t in range(report[d], end_ms, REPORT_S * 1000)]
        events += [Event(t, d, METRICS) for t in range(metrics[d], end_ms, METRICS_S * 1000)]
    events.sort()
    pending: set[int] = set()
    for i, event in enumerate(events):
        if event.kind == POLL_CHANGED:
            pending.add(event.device)
        elif event.kind in (REPORT, METRICS) and event.device in pending:
            pending.discard(event.device)
            events[i] = Event(event.t_ms, event.device, CHANGED)
    return events


def schedule_write(path: Path, schedule: Schedule) -> int:
    """One line per request: ``<t ms> <device index> <kind>``; the first line is the count."""
    with open(path, "w", encoding="ascii") as out:
        out.write(f"{len(schedule.events)}\n")
        out.writelines(f"{e.t_ms} {e.device} {e.kind}\n" for e in schedule.events)
    return len(schedule.events)


def schedule_read(path: Path) -> list[Event]:
    with open(path, encoding="ascii") as data:
        count = int(data.readline())
        events = []
        for line in data:
            t, d, kind = line.split()
            events.append(Event(int(t), int(d), kind))
    if len(events) != count:
        raise ValueError(f"{path}: {len(events)} events, the header says {count}")
    return events


def changes_write(path: Path, changes: Iterable[Change], uuids: list[str]) -> int:
    lines = [f"{c.t_ms}\t{uuids[c.device]}\n" for c in changes]
    path.write_text("".join(lines), encoding="ascii")
    return len(lines)


def changes_read(path: Path) -> list[tuple[int, str]]:
    found = []
    for line in path.read_text(encoding="ascii").splitlines():
        t, uuid = line.split("\t")
        found.append((int(t), uuid))
    return found


# --------------------------------------------------------------------------------------------------------------
# The bodies, from the recordings
# --------------------------------------------------------------------------------------------------------------


def _recorded(generation: str) -> list[dict]:
    return json.loads((WIRE / f"agent-{generation}.json").read_text())["exchanges"]


def _entry(exchange: dict) -> dict:
    return next(iter(exchange["body"].values()))


def metrics_fields(generation: str) -> dict:
    """The metrics a generation sends every 5 minutes, as recorded (static facts and identity parts left out)."""
    exchanges = [e for e in _recorded(generation) if e["method"] == "PATCH" and isinstance(e["body"], dict)]
    source = next((e for e in exchanges if "metrics" in e["note"] and "static facts not" in e["note"]), exchanges[0])
    static = ("os_version", "agent_version", "local_ip")
    identity = ("apps", "config", "is_online", "version", "endpoints_health", "sensor_health")
    return {k: v for k, v in _entry(source).items() if k not in static + identity}


def endpoints_health(names: Iterable[str]) -> dict:
    """The 2025-11-22 agent's ``endpoints_health`` for sensors ``names``, every one online (README of the wire)."""
    return {
        name: {
            "protocol": "modbus",
            "status": "online",
            "connected": True,
            "lastPoll": "2026-12-04T10:00:00.000Z",
            "lastSeen": "2026-12-04T10:00:00.000Z",
            "errorCount": 0,
            "lastError": None,
            "responseTimeMs": 12,
            "pollSuccessRate": 1,
            "registersUpdated": 4,
            "communicationQuality": "good",
        }
        for name in names
    }


def generation_of(template: int) -> int:
    return template % len(GENERATIONS)


def _json_inner(value: dict) -> bytes:
    """``{"a":1,"b":2}`` as ``,"a":1,"b":2``: fields to append to an open object."""
    text = orjson.dumps(value)
    return b"," + text[1:-1] if len(text) > 2 else b""


def head(uuid: str, version: int) -> bytes:
    """The first member's text (the load generator builds it per request)."""
    return b'{"%s":{"version":%d,"apps":{},"is_online":true' % (uuid.encode("ascii"), version)


def config_part(sensors: list[dict]) -> bytes:
    return _json_inner({"config": {"sensors": sensors}})


def tail_plain() -> bytes:
    return b"}}"


def tail_metrics(generation: int, sensor_names: list[str]) -> bytes:
    fields = dict(metrics_fields(GENERATIONS[generation]))
    if generation == 1:
        fields["endpoints_health"] = endpoints_health(sensor_names)
    return _json_inner(fields) + b"}}"


def body_text(
    *, uuid: str, version: int, kind: str, generation: int, config: bytes, tails: tuple[bytes, bytes]
) -> bytes:
    """The JSON a device sends for a report event (uncompressed: the MQTT payload; the checks)."""
    with_config = kind == CHANGED or generation == 0
    tail = tails[1] if kind == METRICS else tails[0]
    return head(uuid, version) + (config if with_config else b"") + tail


def gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def variant_sensors(sensors: list[dict], variant: int) -> list[dict]:
    """The target's sensors as variant ``variant`` (``bench.reports``: 1 marks every sensor's metadata)."""
    if not variant:
        return copy.deepcopy(sensors)
    return [{**s, "metadata": {**s.get("metadata", {}), "benchVariant": 1}} for s in sensors]


# --------------------------------------------------------------------------------------------------------------
# The fleet file (read by bench/lua/agent.lua's fleet mode and by bench.mqttload)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetDevice:
    uuid: str
    api_key: str
    generation: int
    template: int
    version: int  # the target version at the start
    configs: tuple[bytes, bytes]  # gzip members of config_part for variants 0 and 1


@dataclass(frozen=True)
class FleetFile:
    tails: list[tuple[bytes, bytes]]  # per template: gzip members of the plain and the metrics tail
    devices: list[FleetDevice]


def fleet_write(path: Path, tails: list[tuple[bytes, bytes]], devices: Iterable[FleetDevice]) -> int:
    """``SSFLEET1\\n<templates> <devices>\\n``, per template ``<len plain> <len metrics>\\n<bytes>``, then per device
    ``<uuid> <key> <generation> <template> <version> <len config 0> <len config 1>\\n<bytes>``."""
    devices = list(devices)
    with open(path, "wb") as out:
        out.write(MAGIC + b"\n%d %d\n" % (len(tails), len(devices)))
        for plain, metrics in tails:
            out.write(b"%d %d\n" % (len(plain), len(metrics)) + plain + metrics)
        for d in devices:
            a, b = d.configs
            line = f"{d.uuid} {d.api_key} {d.generation} {d.template} {d.version} {len(a)} {len(b)}\n"
            out.write(line.encode("ascii") + a + b)
    return len(devices)


def fleet_read(path: Path) -> FleetFile:
    with open(path, "rb") as data:
        if data.readline().rstrip(b"\n") != MAGIC:
            raise ValueError(f"{path} is not a fleet file")
        templates, count = (int(v) for v in data.readline().split())
        tails = []
        for _ in range(templates):
            a, b = (int(v) for v in data.readline().split())
            tails.append((data.read(a), data.read(b)))
        devices = []
        for _ in range(count):
            uuid, key, gen, template, version, size_a, size_b = data.readline().decode("ascii").split()
            configs = (data.read(int(size_a)), data.read(int(size_b)))
            devices.append(FleetDevice(uuid, key, int(gen), int(template), int(version), configs))
    return FleetFile(tails, devices)


def states_write(path: Path, states: Iterable[tuple[int, int]]) -> int:
    """The fleet's state before a run, one line per device in fleet order: ``<target version> <variant>``."""
    lines = [f"{version} {variant}\n" for version, variant in states]
    path.write_text(f"{len(lines)}\n" + "".join(lines), encoding="ascii")
    return len(lines)


def states_read(path: Path) -> list[tuple[int, int]]:
    lines = path.read_text(encoding="ascii").splitlines()
    found = [(int(v), int(w)) for v, w in (line.split() for line in lines[1:])]
    if len(found) != int(lines[0]):
        raise ValueError(f"{path}: {len(found)} states, the header says {lines[0]}")
    return found


def _inflate(member: bytes) -> bytes:
    return gzip.decompress(member)


class DeviceState:
    """What one device's agent knows while the schedule runs: its version and the variant it runs. The Lua side
    keeps the same (``bench/lua/agent.lua``); the MQTT publisher uses this one."""

    def __init__(self, device: FleetDevice, version: int | None = None, variant: int = 0) -> None:
        self.device = device
        self.version = device.version if version is None else version
        self.variant = variant

    def on_event(self, kind: str) -> None:
        if kind == POLL_CHANGED:
            self.version += 1  # the changer's service writes one new version
        elif kind == CHANGED:
            self.variant = 1 - self.variant

    def payload(self, kind: str, tails: list[tuple[bytes, bytes]]) -> bytes:
        """The uncompressed JSON of a report event (after ``on_event``): what MQTT carries."""
        plain, metrics = tails[self.device.template]
        return body_text(
            uuid=self.device.uuid,
            version=self.version,
            kind=kind,
            generation=self.device.generation,
            config=_inflate(self.device.configs[self.variant]),
            tails=(_inflate(plain), _inflate(metrics)),
        )


def stored_member(data: bytes) -> bytes:
    """A gzip member of ``data`` in one stored block (what the Lua side builds for the head)."""
    import zlib

    size = len(data)
    block = b"\x01" + struct.pack("<HH", size, size ^ 0xFFFF) + data
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + block + struct.pack("<II", zlib.crc32(data), size)


def http_body(state: DeviceState, kind: str, tails: list[tuple[bytes, bytes]]) -> bytes:
    """The gzip body the Lua side sends for a report event (Python mirror, for the checks)."""
    plain, metrics = tails[state.device.template]
    with_config = kind == CHANGED or state.device.generation == 0
    return (
        stored_member(head(state.device.uuid, state.version))
        + (state.device.configs[state.variant] if with_config else b"")
        + (metrics if kind == METRICS else plain)
    )


def events_for(events: list[Event], kinds: Iterable[str]) -> Iterator[Event]:
    wanted = set(kinds)
    return (e for e in events if e.kind in wanted)
