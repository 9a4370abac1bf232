"""Simulated on-device agents for ``manage.py simulate_fleet`` (SPEC sections 5 and 8).

Each agent speaks the real wire protocol: it polls ``GET /api/v1/device/<uuid>/state`` with its key and
``If-None-Match``, "deploys" what it fetched (failing each sensor with a given probability), and reports what runs
with a gzip-compressed ``PATCH /api/v1/device/state``. The agent is a plain state machine (requests out,
responses in, the clock passed as a number), so it is tested without a server; ``run_fleet`` drives many of them
per worker thread over keep-alive HTTP connections to one address, and stops by itself at a deadline.

No database access here: the command creates the fleet and reads the final picture.
"""

import gzip
import heapq
import http.client
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import orjson

AGENT_VERSION = "sim-1.0"
USER_AGENT = f"sensorsync-simulator/{AGENT_VERSION}"
PROTOCOLS = ("modbus", "can", "opcua", "mqtt")

POLL = "poll"
REPORT = "report"
ENDPOINTS = {POLL: "GET /api/v1/device/<uuid>/state", REPORT: "PATCH /api/v1/device/state"}

# What a real adapter says when it cannot start: one of these becomes ``sensor_health[name].lastError``.
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
# The server address
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerAddress:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or a prefix such as "/sensorsync" the product is mounted under

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"


def server_address_parse(url: str) -> ServerAddress:
    """The one address every request goes to; ``ValueError`` with a sentence saying what is wrong."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"'{url}' is not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"'{url}' is not an http:// or https:// URL (for example http://127.0.0.1:8000).")
    if not parts.hostname:
        raise ValueError(f"'{url}' has no host (for example http://127.0.0.1:8000).")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"'{url}' must be a plain base URL: no credentials, query or fragment.")
    return ServerAddress(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
    )


# --------------------------------------------------------------------------------------------------------------
# One agent: a state machine
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    kind: str  # POLL or REPORT
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
    base_path: str = ""


class Agent:
    """One simulated device agent. Times are the caller's monotonic clock, in seconds."""

    def __init__(
        self,
        *,
        index: int,
        device_uuid: str,
        api_key: str,
        settings: AgentSettings,
        rng: random.Random,
        start: float,
        seq_base: int = 0,
    ) -> None:
        self.index = index
        self.device_uuid = str(device_uuid)
        self.api_key = api_key
        self.settings = settings
        self.rng = rng
        self.started_at = start
        # The server refuses a seq older than the last one it saw (stale), and a re-run reuses devices, so the
        # caller starts every run above the previous one (wall-clock microseconds).
        self.seq = seq_base
        self.boot_uptime = rng.randint(3600, 30 * 86400)
        self.os_version = rng.choice(OS_VERSIONS)
        self.local_ip = f"10.{100 + index // 64516 % 100}.{index // 254 % 254 + 1}.{index % 254 + 1}"

        self.etag: str | None = None
        self.target_version: int | None = None  # the version last fetched
        self.applied_version: int | None = None
        self.running: list[dict] = []
        self.sensor_health: dict[str, dict] = {}
        self.injected_failures = 0  # sensors failed on purpose at the applied version

        # Jitter within the shorter interval: the fleet does not fire at once, yet every agent polls early.
        self.next_poll_at = start + rng.uniform(0, min(settings.poll_interval, settings.report_interval))
        self.next_report_at = math.inf  # nothing to report before the first deployment

    # Scheduling ---------------------------------------------------------------------------------------------

    def next_due(self) -> float:
        return min(self.next_poll_at, self.next_report_at)

    def next_kind(self) -> str:
        return POLL if self.next_poll_at <= self.next_report_at else REPORT

    # Requests -----------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"X-Device-API-Key": self.api_key, "Accept": "application/json", "User-Agent": USER_AGENT}

    def poll_request(self) -> Request:
        headers = self._headers()
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        return Request(POLL, "GET", f"{self.settings.base_path}/api/v1/device/{self.device_uuid}/state", headers)

    def report_entry(self, now: float) -> dict:
        """What the agent says it runs; between deployments only ``uptime`` and ``seq`` change."""
        return {
            "version": self.applied_version,
            "config": {"protocolAdapterDevices": self.running},
            "apps": {},
            "os_version": self.os_version,
            "agent_version": AGENT_VERSION,
            "local_ip": self.local_ip,
            "uptime": int(self.boot_uptime + max(0.0, now - self.started_at)),
            "seq": self.seq,
            "sensor_health": self.sensor_health,
        }

    def report_request(self, now: float) -> Request:
        self.seq += 1
        raw = orjson.dumps({self.device_uuid: self.report_entry(now)})
        headers = {**self._headers(), "Content-Type": "application/json", "Content-Encoding": "gzip"}
        body = gzip.compress(raw, compresslevel=6, mtime=0)
        return Request(REPORT, "PATCH", f"{self.settings.base_path}/api/v1/device/state", headers, body, len(raw))

    def request(self, now: float) -> Request:
        return self.poll_request() if self.next_kind() == POLL else self.report_request(now)

    # Deployment ---------------------------------------------------------------------------------------------

    def deploy(self, version: int, config: dict) -> None:
        """Start the adapters of ``version``: each enabled sensor fails with probability ``failure_rate``.

        Decided once per applied version, so the reports that follow are identical (the server's no-op path).
        """
        running: list[dict] = []
        health: dict[str, dict] = {}
        failures = 0
        sensors = config.get("protocolAdapterDevices", []) if isinstance(config, dict) else []
        for sensor in sensors if isinstance(sensors, list) else []:
            if not isinstance(sensor, dict) or not isinstance(sensor.get("name"), str):
                continue
            if sensor.get("enabled", True) is False:
                continue  # correctly not running
            if self.rng.random() < self.settings.failure_rate:
                errors = FAILURE_ERRORS.get(sensor.get("protocol"), GENERIC_ERRORS)
                health[sensor["name"]] = {"healthy": False, "lastError": self.rng.choice(errors)}
                failures += 1
            else:
                running.append(sensor)
                health[sensor["name"]] = {"healthy": True}
        self.applied_version = version
        self.running = running
        self.sensor_health = health
        self.injected_failures = failures

    # Responses ----------------------------------------------------------------------------------------------

    @staticmethod
    def _backoff(response: Response, interval: float) -> float:
        """The interval, or longer when the server asks for it (429 / 503 with ``Retry-After`` in seconds)."""
        if response.status in (429, 503):
            try:
                return max(interval, float(response.headers.get("retry-after", "")))
            except ValueError:
                pass
        return interval

    def handle_poll(self, response: Response, now: float) -> str:
        """``"deployed"`` (a new version), ``"not_modified"`` (304), ``"same_version"`` or ``"error"``."""
        self.next_poll_at = now + self._backoff(response, self.settings.poll_interval)
        if response.status == 304:
            return "not_modified"
        if response.status != 200:
            return "error"
        try:
            state = orjson.loads(response.body)[self.device_uuid]
            version, config = state["version"], state["config"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "error"
        if type(version) is not int or not isinstance(config, dict):
            return "error"
        self.etag = response.headers.get("etag") or None
        self.target_version = version
        if version == self.applied_version:
            return "same_version"
        self.deploy(version, config)
        self.next_report_at = now  # a real agent reports right after deploying
        return "deployed"

    def handle_report(self, response: Response, now: float) -> str | None:
        """The server's verdict (``applied``, ``unchanged``, ``stale``), or None for a refused report."""
        self.next_report_at = now + self._backoff(response, self.settings.report_interval)
        if response.status != 200:
            return None
        try:
            outcome = orjson.loads(response.body)[self.device_uuid]["outcome"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        return outcome if isinstance(outcome, str) else None

    def handle_failure(self, kind: str, now: float) -> None:
        """No answer at all: try again at the next interval (a real agent would also queue the report)."""
        if kind == POLL:
            self.next_poll_at = now + self.settings.poll_interval
        else:
            self.next_report_at = now + self.settings.report_interval


# --------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


@dataclass
class FleetStats:
    """Everything the run counts; shared by the worker threads."""

    requests: Counter = field(default_factory=Counter)  # (kind, status) -> count
    latencies: dict[str, list[float]] = field(default_factory=lambda: {POLL: [], REPORT: []})
    outcomes: Counter = field(default_factory=Counter)  # applied / unchanged / stale
    connection_errors: Counter = field(default_factory=Counter)  # (kind, reason) -> count
    bad_answers: int = 0  # a 200 whose body the agent could not read
    deployments: int = 0
    injected_failures: int = 0
    report_bytes_json: int = 0
    report_bytes_sent: int = 0
    error_samples: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # how late each request started versus its schedule
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    SAMPLES = 5

    def _sample(self, text: str) -> None:
        if len(self.error_samples) < self.SAMPLES:
            self.error_samples.append(text)

    def record_response(
        self, request: Request, response: Response, latency: float, result: str | None, *, injected: int = 0
    ) -> None:
        with self._lock:
            self.requests[(request.kind, response.status)] += 1
            self.latencies[request.kind].append(latency)
            if request.kind == REPORT:
                self.report_bytes_json += request.json_size
                self.report_bytes_sent += len(request.body or b"")
                if result is not None:
                    self.outcomes[result] += 1
            elif result == "deployed":
                self.deployments += 1
                self.injected_failures += injected
            if response.status == 200 and result in ("error", None):
                self.bad_answers += 1
            if response.status >= 500 or (response.status == 200 and result in ("error", None)):
                snippet = response.body[:200].decode("utf-8", "replace")
                self._sample(f"{request.method} {request.path} -> {response.status}: {snippet}")

    def record_lag(self, lag: float) -> None:
        with self._lock:
            self.lags.append(max(0.0, lag))

    def record_failure(self, request: Request, reason: str, latency: float) -> None:
        with self._lock:
            self.connection_errors[(request.kind, reason)] += 1
            self._sample(f"{request.method} {request.path} -> {reason}")

    # Read by the progress line while workers add keys: under the lock, so no dict changes size mid-iteration.

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values()) + sum(self.connection_errors.values())

    @property
    def server_errors(self) -> int:
        with self._lock:
            return sum(count for (_, status), count in self.requests.items() if status >= 500)

    @property
    def refused(self) -> int:
        with self._lock:
            return sum(count for (_, status), count in self.requests.items() if 400 <= status < 500)

    @property
    def errors(self) -> int:
        """What fails a run: connection errors and 5xx answers."""
        with self._lock:
            return sum(self.connection_errors.values()) + self.server_errors


# --------------------------------------------------------------------------------------------------------------
# HTTP: one keep-alive connection per worker thread, to the one address
# --------------------------------------------------------------------------------------------------------------


class Transport(Protocol):
    def send(self, request: Request) -> Response: ...

    def close(self) -> None: ...


class TransportError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP answer ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


class HttpTransport:
    """Sends requests over one persistent connection; never follows redirects, never talks to another host."""

    _STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

    def __init__(self, address: ServerAddress, *, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._used = 0  # requests answered on the current connection
        self.connections = 0  # opened so far: with keep-alive, about one per worker

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.address.scheme == "https" else http.client.HTTPConnection
        self._connection = cls(self.address.host, self.address.port, timeout=self.timeout)
        self._used = 0
        self.connections += 1
        return self._connection

    def _once(self, request: Request) -> Response:
        connection = self._connection or self._connect()
        connection.request(request.method, request.path, body=request.body, headers=request.headers)
        answer = connection.getresponse()
        body = answer.read()
        headers = {name.lower(): value for name, value in answer.getheaders()}
        self._used += 1
        if answer.will_close:
            self.close()
        return Response(answer.status, headers, body)

    def send(self, request: Request) -> Response:
        try:
            try:
                return self._once(request)
            except self._STALE:
                # The server may close an idle keep-alive connection just as we reuse it: retry once on a new
                # one (a repeated report is harmless: same seq, same digest).
                if self._used == 0:
                    raise
                self.close()
                return self._once(request)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportError(failure_reason(exc)) from exc

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None


def agent_step(agent: Agent, transport: Transport, stats: FleetStats, clock: Callable[[], float]) -> None:
    """One request of one agent: build it, send it, feed the answer back to the agent, count it."""
    started = clock()
    stats.record_lag(started - agent.next_due())
    request = agent.request(started)
    try:
        response = transport.send(request)
    except TransportError as exc:
        now = clock()
        agent.handle_failure(request.kind, now)
        stats.record_failure(request, exc.reason, now - started)
        return
    now = clock()
    handle = agent.handle_poll if request.kind == POLL else agent.handle_report
    result = handle(response, now)
    stats.record_response(request, response, now - started, result, injected=agent.injected_failures)


class Worker(threading.Thread):
    """Drives many agents on one thread: a heap ordered by each agent's next due time."""

    def __init__(
        self,
        agents: list[Agent],
        *,
        transport: Transport,
        stats: FleetStats,
        deadline: float,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.agents = agents
        self.transport = transport
        self.stats = stats
        self.deadline = deadline
        self.stop_event = stop
        self.clock = clock
        self.crash: BaseException | None = None

    def run(self) -> None:
        heap = [(agent.next_due(), n) for n, agent in enumerate(self.agents)]
        heapq.heapify(heap)
        try:
            while heap and not self.stop_event.is_set():
                due, n = heap[0]
                if due >= self.deadline:
                    return
                now = self.clock()
                if now >= self.deadline:
                    return
                if due > now:
                    self.stop_event.wait(min(due, self.deadline) - now)
                    continue
                heapq.heappop(heap)
                agent = self.agents[n]
                agent_step(agent, self.transport, self.stats, self.clock)
                heapq.heappush(heap, (agent.next_due(), n))
        except BaseException as exc:  # noqa: BLE001 - reported by run_fleet, never lost in a thread
            self.crash = exc
        finally:
            self.transport.close()


@dataclass
class FleetRun:
    stats: FleetStats
    elapsed: float
    threads: int
    connections: int = 0  # TCP connections the workers opened
    interrupted: bool = False


def run_fleet(
    agents: list[Agent],
    *,
    address: ServerAddress,
    concurrency: int,
    duration: float,
    timeout: float = 10.0,
    stats: FleetStats | None = None,
    on_tick: Callable[[float, FleetStats], None] | None = None,
    tick: float = 1.0,
    transport_factory: Callable[[], Transport] | None = None,
    clock: Callable[[], float] = time.monotonic,
    start: float | None = None,
) -> FleetRun:
    """Run ``agents`` on ``concurrency`` threads until ``duration`` seconds after ``start``; blocks until done.

    ``on_tick(elapsed, stats)`` is called about every ``tick`` seconds from the calling thread (progress).
    A request still in flight at the deadline finishes (bounded by ``timeout``); nothing new starts after it.
    """
    stats = stats or FleetStats()
    start = clock() if start is None else start
    deadline = start + duration
    stop = threading.Event()
    threads = max(1, min(concurrency, len(agents)))
    factory = transport_factory or (lambda: HttpTransport(address, timeout=timeout))
    workers = [
        Worker(
            agents[n::threads],
            transport=factory(),
            stats=stats,
            deadline=deadline,
            stop=stop,
            clock=clock,
            name=f"sim-agent-{n + 1}",
        )
        for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    interrupted = False
    try:
        while any(worker.is_alive() for worker in workers):
            for worker in workers:
                worker.join(timeout=tick / len(workers))
            if on_tick is not None:
                on_tick(clock() - start, stats)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # Also on an exception here (say stderr closed): no worker outlives the call by more than one request.
        stop.set()
        for worker in workers:
            worker.join()
    crashed = next((worker.crash for worker in workers if worker.crash is not None), None)
    if crashed is not None:
        raise crashed
    connections = sum(getattr(worker.transport, "connections", 0) for worker in workers)
    return FleetRun(
        stats=stats, elapsed=clock() - start, threads=threads, connections=connections, interrupted=interrupted
    )


# --------------------------------------------------------------------------------------------------------------
# The summary of the traffic (the command adds the fleet picture from the database)
# --------------------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        (indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()
        for row in (headers, *rows)
    ]


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count >= 1024 else f"{count} B"


def traffic_summary(stats: FleetStats) -> list[str]:
    lines = ["Requests by endpoint and status"]
    rows = []
    for kind in (POLL, REPORT):
        answered = sorted((status, count) for (k, status), count in stats.requests.items() if k == kind)
        failed = sorted((reason, count) for (k, reason), count in stats.connection_errors.items() if k == kind)
        cells = [(str(status), count) for status, count in answered] + [(reason, count) for reason, count in failed]
        if not cells:
            cells = [("-", 0)]
        for n, (status, count) in enumerate(cells):
            rows.append([ENDPOINTS[kind] if n == 0 else "", status, str(count)])
    lines += _table(["ENDPOINT", "STATUS", "COUNT"], rows)

    lines += ["", "Latency (ms)"]
    rows = []
    for kind in (POLL, REPORT):
        values = sorted(stats.latencies[kind])
        rows.append(
            [
                ENDPOINTS[kind],
                str(len(values)),
                _ms(percentile(values, 0.50)),
                _ms(percentile(values, 0.95)),
                _ms(percentile(values, 0.99)),
                _ms(values[-1] if values else None),
            ]
        )
    lines += _table(["ENDPOINT", "COUNT", "P50", "P95", "P99", "MAX"], rows)
    lags = sorted(stats.lags)
    if lags:
        lines.append(
            f"  schedule lag (ms): p50 {_ms(percentile(lags, 0.5))}, p95 {_ms(percentile(lags, 0.95))}, "
            f"max {_ms(lags[-1])} (requests start late when the server or --concurrency cannot keep up)"
        )

    lines += ["", "Reports, as the server answered them"]
    outcomes = ["applied", "unchanged", "stale"] + sorted(set(stats.outcomes) - {"applied", "unchanged", "stale"})
    lines += [f"  {outcome:<10} {stats.outcomes[outcome]}" for outcome in outcomes]
    if stats.report_bytes_json:
        lines.append(
            f"  bodies: {_size(stats.report_bytes_sent)} sent gzip-compressed "
            f"({_size(stats.report_bytes_json)} of JSON)"
        )
    lines.append(
        f"  deployments: {stats.deployments} (new target versions applied by agents); "
        f"sensors failed on purpose: {stats.injected_failures}"
    )

    lines += [""]
    connection_errors = sum(stats.connection_errors.values())
    if not stats.errors and not stats.bad_answers:
        lines.append("Errors: none (no connection errors, no 5xx)")
    else:
        reasons = Counter()
        for (_, reason), count in stats.connection_errors.items():
            reasons[reason] += count
        detail = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        lines.append(
            f"Errors: {connection_errors} connection errors{f' ({detail})' if detail else ''}, "
            f"{stats.server_errors} 5xx answers, {stats.bad_answers} unreadable answers"
        )
        lines += [f"  e.g. {sample}" for sample in stats.error_samples]
    if stats.refused:
        lines.append(
            f"Refused: {stats.refused} answers were 4xx (401: the key is unknown, e.g. rotated by another run with "
            "this --prefix; 403: the device is inactive; 429: the per-device rate limit, which the agents honour "
            "through Retry-After)"
        )
    return lines
