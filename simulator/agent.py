"""One simulated agent: a plain state machine (requests out, responses in, the clock passed as a number), so it is
tested without a server, and the fleet's layout (device names and sensors, the same for the same index).

It speaks the wire protocol of the real agent (Iotistica/iotistic ``agent/``, as recorded in ``agent-wire/``
beside the SPEC), in one of its two generations: the 2025-11-06 agent (``sync-state.ts``) or the 2025-11-22 agent
(``device-manager/sync.ts``). It polls ``GET /api/v1/device/<uuid>/state`` with its key and ``If-None-Match``,
"deploys" the sensors it finds under ``config.sensors`` (failing some on purpose), and reports with
gzip-compressed ``PATCH /api/v1/device/state`` bodies shaped as that generation shapes them: metrics every metrics
interval, some facts once per start, no ``seq`` or ``reported_at``, an offline queue of failed reports
(``version`` stripped) flushed oldest first after the next success, and the real agent's backoff on errors.
"""

import gzip
import hashlib
import math
import random
import uuid
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

USER_AGENT = "sensorsync-simulator"
PROTOCOLS = ("modbus", "can", "opcua", "mqtt")

# The two generations of the real agent the simulator can speak as (SPEC section 5, agent-wire/README.md).
AGENT_2025_11_06 = "2025-11-06"
AGENT_2025_11_22 = "2025-11-22"
AGENTS = (AGENT_2025_11_06, AGENT_2025_11_22)
DEFAULT_AGENT = AGENT_2025_11_22
# ``agent_version`` in the real ones' format ("upstream" from the 2025-11-06 agent, "1.0.84" from the newest),
# marked so that a simulated device is never mistaken for a real one in the admin.
AGENT_VERSIONS = {AGENT_2025_11_06: "upstream-sim", AGENT_2025_11_22: "1.0.84-sim"}

POLL = "poll"
REPORT = "report"
QUEUED = "queued"  # a report from the agent's offline queue, re-sent after a successful report
KINDS = (POLL, REPORT, QUEUED)
ENDPOINTS = {
    POLL: "GET /api/v1/device/<uuid>/state",
    REPORT: "PATCH /api/v1/device/state",
    QUEUED: "PATCH /api/v1/device/state (queued)",
}

# The real agent's error handling (both generations): any non-2xx answer or network error is a failure, retried
# after 15 s x 2^(n-1) +-30 %, at most 15 minutes; Retry-After is not read.
BACKOFF_BASE = 15.0
BACKOFF_MAX = 15 * 60.0
BACKOFF_JITTER = 0.3
BACKOFF_MAX_ERRORS = 10  # the 2025-11-22 agent's cap on its error count (the delay is at its maximum by then)
OFFLINE_AFTER = 3  # consecutive failed polls or reports before the agent's connection monitor says "offline"
QUEUE_MAX = 1000  # the offline queue drops its oldest report beyond this

# What a real adapter says when it cannot start or reach its device: one becomes the sensor health's lastError.
FAILURE_ERRORS: dict[str, tuple[str, ...]] = {
    "modbus": (
        "connection refused",
        "timeout after 3000 ms",
        "modbus exception 0x02: illegal data address",
        "modbus exception 0x0B: gateway target device failed to respond",
    ),
    "can": ("bus-off", "no ACK on can0 (error-passive)", "interface can0 is down"),
    "opcua": ("connection refused", "timeout after 3000 ms", "BadCertificateUntrusted", "BadSecurityChecksFailed"),
    "mqtt": ("connection refused", "timeout after 3000 ms", "connection refused: not authorized (rc=5)"),
}
GENERIC_ERRORS = ("connection refused", "timeout after 3000 ms")
SIMULATED_ERRORS = frozenset(error for errors in (*FAILURE_ERRORS.values(), GENERIC_ERRORS) for error in errors)

OS_VERSIONS = ("Debian GNU/Linux 12 (bookworm)", "Ubuntu 22.04.4 LTS", "Yocto Linux 4.0.17 (kirkstone)")


# --------------------------------------------------------------------------------------------------------------
# The fleet's layout: names and sensors, the same for the same index (so a re-run makes no new target version)
# --------------------------------------------------------------------------------------------------------------


def device_names(prefix: str, count: int) -> list[str]:
    width = max(4, len(str(count)))
    return [f"{prefix}-{number:0{width}d}" for number in range(1, count + 1)]


def _address(device_index: int, sensor_index: int) -> str:
    return f"10.{20 + device_index // 250 % 200}.{device_index % 250}.{10 + sensor_index % 240}"


def sensor_specs(device_index: int, count: int) -> list[dict]:
    """``count`` sensor objects (SPEC section 3, no ids) for device number ``device_index``, protocols mixed."""
    sensors = []
    for j in range(count):
        protocol = PROTOCOLS[(device_index + j) % len(PROTOCOLS)]
        host = _address(device_index, j)
        if protocol == "modbus":
            connection = {"host": host, "port": 502, "unitId": j % 247 + 1, "timeoutMs": 3000}
            data_points = [
                {"name": "temperature", "address": 40001 + 4 * j, "type": "float32", "unit": "C"},
                {"name": "pressure", "address": 40003 + 4 * j, "type": "float32", "unit": "bar"},
            ]
        elif protocol == "can":
            connection = {"interface": f"can{j % 2}", "bitrate": 250000, "nodeId": j % 127 + 1}
            data_points = [
                {
                    "name": "engine_rpm",
                    "canId": 0x0CF00400,
                    "startBit": 24,
                    "length": 16,
                    "scale": 0.125,
                    "unit": "rpm",
                },
                {"name": "coolant_temp", "canId": 0x18FEEE00, "startBit": 0, "length": 8, "offset": -40, "unit": "C"},
            ]
        elif protocol == "opcua":
            connection = {
                "endpointUrl": f"opc.tcp://{host}:4840",
                "securityPolicy": "Basic256Sha256",
                "securityMode": "SignAndEncrypt",
            }
            data_points = [
                {"name": "spindle_speed", "nodeId": f"ns=2;s=Machine{j + 1}.Spindle.Speed", "unit": "rpm"},
                {"name": "feed_rate", "nodeId": f"ns=2;s=Machine{j + 1}.Axis.FeedRate", "unit": "mm/min"},
            ]
        else:
            connection = {"brokerUrl": f"mqtt://{host}:1883", "clientId": f"sim-{device_index}-{j + 1}", "qos": 1}
            data_points = [
                {"name": "humidity", "topic": f"plant/hall-{device_index % 4}/line-{j + 1}/humidity", "unit": "%"},
            ]
        sensors.append(
            {
                "name": f"{protocol}-{j + 1:02d}",
                "protocol": protocol,
                "enabled": True,
                "pollInterval": (1000, 2000, 5000, 10000)[j % 4],
                "connection": connection,
                "dataPoints": data_points,
                "metadata": {"simulated": True},
            }
        )
    return sensors


# --------------------------------------------------------------------------------------------------------------
# One agent: a state machine
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    kind: str  # POLL, REPORT or QUEUED
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None
    json_size: int = 0  # the report before compression


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass(frozen=True)
class AgentSettings:
    """What every agent of a run shares."""

    failure_rate: float
    poll_interval: float
    report_interval: float
    metrics_interval: float = 300.0
    agent: str = DEFAULT_AGENT  # AGENT_2025_11_06 or AGENT_2025_11_22
    base_path: str = ""
    # What a failed sensor becomes, drawn among these: left out of the report (NOT_RUN), or registered but unable to
    # reach its device (UNREACHABLE, a health problem, deployed all the same). Names, since the states follow.
    failure_states: tuple[str, ...] = ("not_run", "unreachable")


# What became of a sensor the agent was asked to run.
RUNNING = "running"  # registered, its adapter reaches the device
UNREACHABLE = "unreachable"  # registered and configured, but its adapter cannot reach the PLC (health, not deployment)
NOT_RUN = "not_run"  # the agent could not set it up: absent from the reported config.sensors
DISABLED = "disabled"  # registered with enabled false: correctly not polled


@dataclass
class SensorRun:
    served: dict  # the sensor as the target state served it
    state: str
    own_id: str  # the id the agent's own database gives the row (the 2025-11-22 agent reports it)
    started: float  # when its adapter started, on the caller's clock
    error: str | None = None
    row: dict | None = None  # the 2025-11-22 agent's row, made once

    @property
    def name(self) -> str:
        return self.served["name"]

    @property
    def protocol(self) -> str:
        return self.served.get("protocol") or "modbus"

    @property
    def poll_ms(self) -> int:
        poll = self.served.get("pollInterval")
        return poll if type(poll) is int and poll > 0 else 5000


@dataclass
class Outgoing:
    """The report in flight, and what the agent remembers once it was accepted."""

    entry: dict
    state_only: dict | None = None  # the 2025-11-22 agent's "last report" for its change detection
    config_hash: str | None = None
    health_hash: str | None = None


_MISSING = object()

# What the agent keeps of a failed report in its offline queue (in this order): no version, processes or health.
QUEUED_KEYS = (
    "config",
    "os_version",
    "agent_version",
    "local_ip",
    "cpu_usage",
    "memory_usage",
    "memory_total",
    "storage_usage",
    "storage_total",
    "temperature",
    "uptime",
)


def _js(number: float) -> float | int:
    """A number as JSON.stringify writes it: a whole float has no fraction (1.0 -> 1)."""
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _hash(value: object) -> str:
    return hashlib.blake2b(orjson.dumps(value), digest_size=16).hexdigest()


# Health figures that vary from poll to poll (response time, registers updated) come from the poll count, not from
# the agent's random generator, so a report depends only on the clock: a cheap, stable pseudo-random number.
def _noise(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


class Agent:
    """One simulated device agent. Times are the caller's monotonic clock, in seconds; ``wall_start`` is the wall
    clock (epoch seconds) at ``start``, for the ISO times the agent writes into its health."""

    def __init__(
        self,
        *,
        index: int,
        device_uuid: str,
        api_key: str,
        settings: AgentSettings,
        rng: random.Random,
        start: float,
        wall_start: float = 1_767_225_600.0,
    ) -> None:
        if settings.agent not in AGENTS:
            raise ValueError(f"Unknown agent generation '{settings.agent}' (one of {', '.join(AGENTS)}).")
        self.index = index
        self.device_uuid = str(device_uuid)
        self.api_key = api_key
        self.settings = settings
        self.generation = settings.agent
        self.agent_version = AGENT_VERSIONS[settings.agent]
        self.started_at = start
        self.wall_start = wall_start
        # Jitter, metrics and backoff draw from ``rng``, whose sequence depends on timing; which sensors fail and
        # the agent's own ids draw from their own generator, so a seed repeats them whatever the server's pace.
        self.rng = rng
        self.decisions = random.Random(rng.getrandbits(64))

        # Facts of the device.
        self.boot_uptime = rng.uniform(3600, 30 * 86400)
        self.os_version = rng.choice(OS_VERSIONS)
        self.local_ip = f"10.{100 + index // 64516 % 100}.{index // 254 % 254 + 1}.{index % 254 + 1}"
        self.memory_total = rng.choice((1906, 3795, 7812, 15_895))
        self.storage_total = rng.choice((29_127, 58_829, 117_236, 238_475))
        self.storage_base = int(self.storage_total * rng.uniform(0.15, 0.6))
        self.agent_pid = rng.randint(300, 4000)
        self.network_interfaces = [
            {
                "name": "lo",
                "ip4": "127.0.0.1",
                "ip6": "::1",
                "mac": "00:00:00:00:00:00",
                "type": "virtual",
                "default": False,
                "virtual": False,
                "operstate": "unknown",
            },
            {
                "name": "eth0",
                "ip4": self.local_ip,
                "ip6": f"fd00::{index:x}",
                "mac": "02:fc:" + ":".join(f"{(index >> shift) & 0xFF:02x}" for shift in (24, 16, 8, 0)),
                "type": "wired",
                "default": True,
                "virtual": False,
                "operstate": "up",
            },
        ]

        # The target state, and what runs.
        self.etag: str | None = None
        self.target_version = 0  # the version last fetched: the agent reports it as the one it applied
        self.target_key: bytes | None = None  # the last target fetched, to see whether a new one differs
        self.sensors: dict[str, SensorRun] = {}  # registered with the agent, in registration order
        self.not_run: dict[str, SensorRun] = {}  # desired, but the agent could not set them up
        self.echo_config: dict = {}  # 2025-11-22: every non-"sensors" key of the configs it was served
        self.sensor_list_made = False  # 2025-11-06: its config has a "sensors" list once one was registered
        self.injected_failures = 0  # sensors failed on purpose at the last deployment

        # Its connection monitor and error counters (a success resets the count of its own kind).
        self.poll_errors = 0
        self.report_errors = 0
        self.online = True

        # Reporting.
        self.metrics_at = -math.inf
        self.facts_sent = False  # os_version, agent_version: once per start, marked before the request succeeds
        self.local_ip_sent = False
        self.first_report = True  # 2025-11-22: until a report is accepted, config and health always go along
        self.last_state: dict | None = None
        self.last_config_hash: str | None = None
        self.last_health_hash: str | None = None
        self.in_flight: Outgoing | None = None
        self.queue: deque[dict] = deque()  # the offline queue, oldest first
        self.flushing = 0  # queued reports still to send in the current flush
        self.queued_total = 0  # failed reports put into the queue
        self.reports_skipped = 0  # report cycles with nothing to send

        # Jitter within the shorter interval: the fleet does not fire at once, yet every agent polls early. The
        # reporting loop starts once the first poll is done, as the agent starts it after its first poll.
        self.next_poll_at = start + rng.uniform(0, min(settings.poll_interval, settings.report_interval))
        self.next_report_at = math.inf

    # Scheduling ---------------------------------------------------------------------------------------------

    def next_due(self) -> float:
        return min(self.next_poll_at, self.next_report_at)

    def next_kind(self) -> str:
        if self.next_poll_at <= self.next_report_at:
            return POLL
        return QUEUED if self.flushing else REPORT

    def _backoff(self, errors: int) -> float:
        delay = min(BACKOFF_BASE * 2 ** (min(errors, BACKOFF_MAX_ERRORS) - 1), BACKOFF_MAX)
        return delay * (1 + self.rng.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))

    def _start_reporting(self, now: float) -> None:
        if self.next_report_at == math.inf:
            self.next_report_at = now

    # The connection monitor: offline after 3 failures in a row of either kind, online again once both succeed.

    def _succeeded(self, kind: str) -> None:
        if kind == POLL:
            self.poll_errors = 0
        else:
            self.report_errors = 0
        if not self.online and self.poll_errors == 0 and self.report_errors == 0:
            self.online = True

    def _failed(self, kind: str) -> int:
        if kind == POLL:
            self.poll_errors += 1
        else:
            self.report_errors += 1
        if max(self.poll_errors, self.report_errors) >= OFFLINE_AFTER:
            self.online = False
        return self.poll_errors if kind == POLL else self.report_errors

    # Requests -----------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-Device-API-Key": self.api_key, "User-Agent": USER_AGENT}

    def poll_request(self) -> Request:
        headers = self._headers()
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        return Request(POLL, "GET", f"{self.settings.base_path}/api/v1/device/{self.device_uuid}/state", headers)

    def _patch(self, kind: str, entry: dict) -> Request:
        raw = orjson.dumps({self.device_uuid: entry})
        headers = {**self._headers(), "Content-Encoding": "gzip"}
        body = gzip.compress(raw, compresslevel=6, mtime=0)
        return Request(kind, "PATCH", f"{self.settings.base_path}/api/v1/device/state", headers, body, len(raw))

    def report_request(self, now: float) -> Request | None:
        """This report cycle's report, or None when the agent has nothing to send (2025-11-22: nothing changed
        and no metrics due); the next cycle is then one report interval on."""
        build = self._report_2025_11_06 if self.generation == AGENT_2025_11_06 else self._report_2025_11_22
        outgoing = build(now)
        if outgoing is None:
            self.reports_skipped += 1
            self.next_report_at = now + self.settings.report_interval
            return None
        self.in_flight = outgoing
        return self._patch(REPORT, outgoing.entry)

    def queued_request(self) -> Request:
        """The oldest report of the offline queue, sent as it was queued."""
        return self._patch(QUEUED, self.queue[0])

    def request(self, now: float) -> Request | None:
        kind = self.next_kind()
        if kind == POLL:
            return self.poll_request()
        if kind == QUEUED:
            return self.queued_request()
        return self.report_request(now)

    # What the agent reports ---------------------------------------------------------------------------------

    def uptime(self, now: float) -> float | int:
        return _js(round(self.boot_uptime + max(0.0, now - self.started_at), 2))

    def _facts(self, entry: dict) -> None:
        if not self.facts_sent:
            entry["os_version"] = self.os_version
            entry["agent_version"] = self.agent_version
            self.facts_sent = True

    def _metrics(self, entry: dict, now: float) -> None:
        rng = self.rng
        entry["cpu_usage"] = rng.randint(2, 85)
        entry["memory_usage"] = int(self.memory_total * rng.uniform(0.18, 0.72))
        entry["memory_total"] = self.memory_total
        entry["storage_usage"] = self.storage_base + int(max(0.0, now - self.started_at) // 600)
        entry["storage_total"] = self.storage_total
        entry["temperature"] = _js(round(rng.uniform(38.0, 71.0), 1))
        entry["uptime"] = self.uptime(now)
        processes = [{"pid": self.agent_pid, "name": "agent", "cpu": _js(round(rng.uniform(0.4, 6.0), 1)), "mem": 1.2}]
        protocols = dict.fromkeys(run.protocol for run in self.sensors.values() if run.state != DISABLED)
        for n, protocol in enumerate(list(protocols)[:4]):
            cpu, mem = _js(round(rng.uniform(0.1, 2.5), 1)), _js(round(0.3 + 0.1 * n, 1))
            processes.append({"pid": self.agent_pid + 17 + n, "name": f"{protocol}-adapter", "cpu": cpu, "mem": mem})
        entry["top_processes"] = processes
        entry["network_interfaces"] = self.network_interfaces
        if not self.local_ip_sent:  # once per start, from the default interface
            entry["local_ip"] = self.local_ip
            self.local_ip_sent = True

    def _iso(self, moment: float) -> str:
        when = datetime.fromtimestamp(self.wall_start + (moment - self.started_at), UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _polls(self, run: SensorRun, now: float) -> tuple[int, float]:
        """How many times the adapter polled the sensor's device so far (the first at its start), and when last."""
        polls = int(max(0.0, now - run.started) * 1000 // run.poll_ms) + 1
        return polls, run.started + (polls - 1) * run.poll_ms / 1000

    def _endpoint_health(self, run: SensorRun, now: float) -> dict:
        """2025-11-22: one ``endpoints_health`` entry."""
        health = {
            "protocol": run.protocol,
            "status": "offline",
            "connected": False,
            "lastPoll": None,
            "lastSeen": None,
            "errorCount": 0,
            "lastError": None,
            "responseTimeMs": None,
            "pollSuccessRate": 0,
            "registersUpdated": 0,
            "communicationQuality": "offline",
        }
        if run.state == DISABLED:
            health.update(status="disabled", communicationQuality="disabled")
        elif run.state == NOT_RUN:
            health.update(errorCount=1, lastError=run.error)
        else:
            polls, last = self._polls(run, now)
            if run.state == UNREACHABLE:
                health.update(lastPoll=self._iso(last), errorCount=polls, lastError=run.error)
            else:
                noise = _noise(run.name, polls)
                health.update(
                    status="online",
                    connected=True,
                    lastPoll=self._iso(last),
                    lastSeen=self._iso(last),
                    responseTimeMs=4 + noise % 37,
                    pollSuccessRate=1,
                    registersUpdated=noise % (len(run.served.get("dataPoints") or ()) + 1),
                    communicationQuality="good",
                )
        return health

    def endpoints_health(self, now: float) -> dict:
        runs = [*self.sensors.values(), *self.not_run.values()]
        return {run.name: self._endpoint_health(run, now) for run in runs}

    def protocol_adapters_health(self, now: float) -> dict:
        """2025-11-06: ``{"<protocol>": [device status, ...]}`` of the sensors its adapters were given."""
        health: dict[str, list[dict]] = {}
        for run in [*self.sensors.values(), *self.not_run.values()]:
            if run.state == DISABLED:
                continue  # its adapters only take enabled devices
            status = {"deviceName": run.name, "connected": False, "lastPoll": None, "errorCount": 1}
            if run.state == NOT_RUN:
                status["lastError"] = run.error
            else:
                polls, last = self._polls(run, now)
                status["lastPoll"] = self._iso(last)
                if run.state == UNREACHABLE:
                    status.update(errorCount=polls, lastError=run.error)
                else:
                    status.update(connected=True, errorCount=0, lastError=None)
            health.setdefault(run.protocol, []).append(status)
        return health

    def reported_config(self) -> dict:
        """The ``config`` of a report: what the agent's adapters were set up with, in its generation's shape."""
        if self.generation == AGENT_2025_11_06:
            # The sensors as it was served them; no list until it registered one, and no other key.
            return {"sensors": [run.served for run in self.sensors.values()]} if self.sensor_list_made else {}
        return {**self.echo_config, "sensors": [run.row for run in self.sensors.values()]}

    def _report_2025_11_06(self, now: float) -> Outgoing:
        entry = {"apps": {}, "config": self.reported_config(), "is_online": self.online, "version": self.target_version}
        self._facts(entry)
        if now - self.metrics_at >= self.settings.metrics_interval:
            self.metrics_at = now
            self._metrics(entry, now)
            health = self.protocol_adapters_health(now)
            if health:
                entry["protocol_adapters_health"] = health
        # It reports only what changed since its last report, or when metrics are due; but it compares its config
        # by object identity, and builds a new one for every report, so in practice every cycle has a report.
        return Outgoing(entry)

    def _report_2025_11_22(self, now: float) -> Outgoing | None:
        include_metrics = now - self.metrics_at >= self.settings.metrics_interval
        config = self.reported_config()
        config_hash = _hash(config)
        config_changed = self.first_report or config_hash != self.last_config_hash
        health = self.endpoints_health(now)
        health_hash = _hash(health)
        health_changed = self.first_report or health_hash != self.last_health_hash

        entry = {"apps": {}, "is_online": self.online, "version": self.target_version}
        if config_changed:  # left out when unchanged since the last report it sent: "as before"
            entry["config"] = config
        if health_changed or include_metrics:
            entry["endpoints_health"] = health
        self._facts(entry)
        if include_metrics:
            self.metrics_at = now
            self._metrics(entry, now)

        state_keys = ("apps", "is_online", "version", "config", "endpoints_health", "os_version", "agent_version")
        state_only = {key: entry[key] for key in state_keys if key in entry}
        last = self.last_state
        # Its change detection: health (an object compared by identity) always counts as changed when present.
        changed = last is None or any(
            key == "endpoints_health" or last.get(key, _MISSING) != value for key, value in state_only.items()
        )
        if not (changed or include_metrics or config_changed or health_changed):
            return None
        return Outgoing(entry, state_only, config_hash, health_hash)

    @staticmethod
    def queued_form(entry: dict) -> dict:
        """A failed report as the agent stores it in its offline queue: no ``version``, no process list,
        interfaces or health."""
        stripped = {"apps": {}, "is_online": entry["is_online"]}
        for key in QUEUED_KEYS:
            if key in entry:
                stripped[key] = entry[key]
        return stripped

    # Deployment ---------------------------------------------------------------------------------------------

    def _sensor_start(self, sensor: dict, now: float, own_id: str | None) -> SensorRun:
        decisions = self.decisions
        own_id = own_id or str(uuid.UUID(int=decisions.getrandbits(128), version=4))
        run = SensorRun(served=sensor, state=RUNNING, own_id=own_id, started=now)
        if sensor.get("enabled", True) is False:
            run.state = DISABLED
        elif self.settings.failure_rate > 0 and decisions.random() < self.settings.failure_rate:
            run.error = decisions.choice(FAILURE_ERRORS.get(run.protocol, GENERIC_ERRORS))
            run.state = decisions.choice(self.settings.failure_states)
        if self.generation == AGENT_2025_11_22:
            connection = sensor.get("connection")
            if not isinstance(connection, dict):
                connection = {}
            unit_id = connection.get("unitId")
            run.row = {
                "id": run.own_id,
                "name": run.name,
                "protocol": run.protocol,
                "connectionString": orjson.dumps(connection).decode(),
                "pollInterval": run.poll_ms,
                "enabled": 0 if run.state == DISABLED else 1,
                "metadata": {"slaveId": unit_id} if run.protocol == "modbus" and unit_id is not None else {},
            }
        return run

    def deploy(self, config: dict, now: float) -> None:
        """Set up the sensors of a new target: a sensor served unchanged keeps running as it was; a new or changed
        one (or one that could not be set up before) starts again, failing with probability ``failure_rate``."""
        served: dict[str, dict] = {}
        sensors = config.get("sensors")
        for sensor in sensors if isinstance(sensors, list) else []:
            if isinstance(sensor, dict) and isinstance(sensor.get("name"), str):
                served.setdefault(sensor["name"], sensor)
        if self.generation == AGENT_2025_11_22:
            # It copies every other key into the config it runs (and never drops one).
            self.echo_config.update((key, value) for key, value in config.items() if key != "sensors")

        registered = {name: run for name, run in self.sensors.items() if name in served}
        not_run: dict[str, SensorRun] = {}
        failures = 0
        for name, sensor in served.items():
            old = registered.get(name)
            if old is not None and old.served == sensor:
                continue
            run = self._sensor_start(sensor, now, old.own_id if old is not None else None)
            failures += run.state in (NOT_RUN, UNREACHABLE)
            if run.state == NOT_RUN:
                registered.pop(name, None)
                not_run[name] = run
            else:
                registered[name] = run
        self.sensors = registered
        self.not_run = not_run
        self.sensor_list_made = self.sensor_list_made or bool(registered)
        self.injected_failures = failures

    # Responses ----------------------------------------------------------------------------------------------

    def handle_poll(self, response: Response, now: float) -> str:
        """``"deployed"`` (a new target), ``"not_modified"`` (304), ``"same_target"``, ``"no_state"`` (a 200 without
        this device, which the agent shrugs off) or ``"error"`` (backoff)."""
        result = self._poll_read(response, now)
        if result == "error":
            self.next_poll_at = now + self._backoff(self._failed(POLL))
        else:
            self._succeeded(POLL)
            self.next_poll_at = now + self.settings.poll_interval
        self._start_reporting(now)
        return result

    def _poll_read(self, response: Response, now: float) -> str:
        if response.status == 304:
            return "not_modified"
        if not 200 <= response.status < 300:
            return "error"
        if response.headers.get("etag"):
            self.etag = response.headers["etag"]
        try:
            answer = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return "error"
        state = answer.get(self.device_uuid) if isinstance(answer, dict) else None
        if not isinstance(state, dict):
            return "no_state"
        version, apps, config = state.get("version") or 1, state.get("apps") or {}, state.get("config") or {}
        if type(version) is not int or not isinstance(apps, dict) or not isinstance(config, dict):
            return "error"
        self.target_version = version
        key = orjson.dumps({"apps": apps, "config": config})
        if key == self.target_key:
            return "same_target"
        self.target_key = key
        self.deploy(config, now)
        return "deployed"

    @staticmethod
    def outcome(response: Response) -> str | None:
        """The server's verdict on a report (applied, unchanged, stale, queued), if it gave a readable one."""
        if not 200 <= response.status < 300:
            return None
        try:
            answer = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return None
        verdict = next(iter(answer.values()), None) if isinstance(answer, dict) and len(answer) == 1 else None
        outcome = verdict.get("outcome") if isinstance(verdict, dict) else None
        return outcome if isinstance(outcome, str) else None

    def _report_done(self, accepted: bool, now: float) -> None:
        sent, self.in_flight = self.in_flight, None
        if accepted:
            self._succeeded(REPORT)
            if sent is not None and sent.state_only is not None:
                self.last_state = sent.state_only
                self.last_config_hash, self.last_health_hash = sent.config_hash, sent.health_hash
                self.first_report = False
            if self.queue:  # flush the offline queue now, oldest first, each report on its own
                self.flushing = len(self.queue)
                self.next_report_at = now
                return
            self.next_report_at = now + self.settings.report_interval
            return
        # 2025-11-22 queues every failed report; 2025-11-06 only once its connection monitor says offline.
        if sent is not None and (self.generation == AGENT_2025_11_22 or not self.online):
            self.queue.append(self.queued_form(sent.entry))
            self.queued_total += 1
            if len(self.queue) > QUEUE_MAX:
                self.queue.popleft()
        self.next_report_at = now + self._backoff(self._failed(REPORT))

    def _queued_done(self, accepted: bool, now: float) -> None:
        if accepted:
            self.queue.popleft()
            self.flushing -= 1
        else:
            self.flushing = 0  # it stays first in the queue, and is sent again after the next successful report
        self.next_report_at = now if self.flushing else now + self.settings.report_interval

    def handle_report(self, response: Response, now: float) -> str | None:
        """The answer to the report in flight: the server's verdict, or None (refused or unreadable)."""
        self._report_done(200 <= response.status < 300, now)
        return self.outcome(response)

    def handle_queued(self, response: Response, now: float) -> str | None:
        """The answer to the queued report at the head of the queue."""
        self._queued_done(200 <= response.status < 300, now)
        return self.outcome(response)

    def handle(self, request: Request, response: Response, now: float) -> str | None:
        if request.kind == POLL:
            return self.handle_poll(response, now)
        if request.kind == QUEUED:
            return self.handle_queued(response, now)
        return self.handle_report(response, now)

    def handle_failure(self, request: Request, now: float) -> None:
        """No answer at all (connection refused, timeout): the same as a refusal."""
        if request.kind == POLL:
            self.next_poll_at = now + self._backoff(self._failed(POLL))
            self._start_reporting(now)
        elif request.kind == QUEUED:
            self._queued_done(False, now)
        else:
            self._report_done(False, now)
