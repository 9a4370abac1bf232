"""Driving many simulated agents: ``run_fleet`` runs them per worker thread over keep-alive HTTP connections to
one address and stops by itself at a deadline, counting everything (``FleetStats``); ``traffic_summary`` says what
happened. The command (``manage.py simulate_fleet``) adds the fleet's picture from the database.
"""

import heapq
import http.client
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from .agent import ENDPOINTS, KINDS, POLL, QUEUED, Agent, Request, Response

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

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (kind, status) -> count
    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    outcomes: Counter[str] = field(default_factory=Counter)  # applied / unchanged / stale / queued
    connection_errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason) -> count
    bad_answers: int = 0  # a 2xx whose body the agent could not read
    deployments: int = 0
    injected_failures: int = 0
    reports_queued: int = 0  # failed reports the agents put into their offline queues
    reports_skipped: int = 0  # report cycles in which an agent had nothing to send
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
            ok = 200 <= response.status < 300
            if request.kind == POLL:
                unreadable = ok and result in ("error", "no_state")
                if result == "deployed":
                    self.deployments += 1
                    self.injected_failures += injected
            else:
                unreadable = ok and result is None
                self.report_bytes_json += request.json_size
                self.report_bytes_sent += len(request.body or b"")
                if result is not None:
                    self.outcomes[result] += 1
            self.bad_answers += unreadable
            if response.status >= 500 or unreadable:
                snippet = response.body[:200].decode("utf-8", "replace")
                self._sample(f"{request.method} {request.path} -> {response.status}: {snippet}")

    def record_lag(self, lag: float) -> None:
        with self._lock:
            self.lags.append(max(0.0, lag))

    def record_failure(self, request: Request, reason: str, latency: float) -> None:
        with self._lock:
            self.connection_errors[(request.kind, reason)] += 1
            self._sample(f"{request.method} {request.path} -> {reason}")

    def record_agent(self, *, queued: int = 0, skipped: int = 0) -> None:
        if queued or skipped:
            with self._lock:
                self.reports_queued += queued
                self.reports_skipped += skipped

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
                # one (a repeated report is harmless: the same body, the same digest).
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
    """One step of one agent: build its request (a report cycle may have none), send it, feed the answer back to
    the agent, count it."""
    started = clock()
    stats.record_lag(started - agent.next_due())
    queued, skipped = agent.queued_total, agent.reports_skipped
    request = agent.request(started)
    if request is None:
        stats.record_agent(skipped=agent.reports_skipped - skipped)
        return
    try:
        response = transport.send(request)
    except TransportError as exc:
        now = clock()
        agent.handle_failure(request, now)
        stats.record_failure(request, exc.reason, now - started)
    else:
        now = clock()
        result = agent.handle(request, response, now)
        stats.record_response(request, response, now - started, result, injected=agent.injected_failures)
    stats.record_agent(queued=agent.queued_total - queued)


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
        except BaseException as exc:  # reported by run_fleet, never lost in a thread
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


OUTCOMES = ("applied", "unchanged", "stale", "queued")


def traffic_summary(stats: FleetStats) -> list[str]:
    used = {kind for kind, _ in (*stats.requests, *stats.connection_errors)}
    kinds = [kind for kind in KINDS if kind != QUEUED or kind in used]  # queued reports: only when there were some
    lines = ["Requests by endpoint and status", *_requests_table(stats, kinds)]
    lines += ["", "Latency (ms)", *_latency_lines(stats, kinds)]
    lines += ["", "Reports, as the server answered them", *_report_lines(stats, used)]
    lines += ["", *_error_lines(stats)]
    return lines


def _requests_table(stats: FleetStats, kinds: list[str]) -> list[str]:
    rows = []
    for kind in kinds:
        answered = sorted((status, count) for (k, status), count in stats.requests.items() if k == kind)
        failed = sorted((reason, count) for (k, reason), count in stats.connection_errors.items() if k == kind)
        cells = [(str(status), count) for status, count in answered] + [(reason, count) for reason, count in failed]
        if not cells:
            cells = [("-", 0)]
        for n, (status, count) in enumerate(cells):
            rows.append([ENDPOINTS[kind] if n == 0 else "", status, str(count)])
    return _table(["ENDPOINT", "STATUS", "COUNT"], rows)


def _latency_lines(stats: FleetStats, kinds: list[str]) -> list[str]:
    rows = []
    for kind in kinds:
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
    lines = _table(["ENDPOINT", "COUNT", "P50", "P95", "P99", "MAX"], rows)
    lags = sorted(stats.lags)
    if lags:
        lines.append(
            f"  schedule lag (ms): p50 {_ms(percentile(lags, 0.5))}, p95 {_ms(percentile(lags, 0.95))}, "
            f"max {_ms(lags[-1])} (requests start late when the server or --concurrency cannot keep up)"
        )
    return lines


def _report_lines(stats: FleetStats, used: set[str]) -> list[str]:
    outcomes = [*OUTCOMES, *sorted(set(stats.outcomes) - set(OUTCOMES))]
    lines = [f"  {outcome:<10} {stats.outcomes[outcome]}" for outcome in outcomes]
    if stats.report_bytes_json:
        lines.append(
            f"  bodies: {_size(stats.report_bytes_sent)} sent gzip-compressed "
            f"({_size(stats.report_bytes_json)} of JSON)"
        )
    if stats.reports_queued or QUEUED in used:
        sent = sum(count for (kind, _), count in stats.requests.items() if kind == QUEUED)
        lines.append(
            f"  offline queues: {stats.reports_queued} failed reports queued without 'version'; "
            f"{sent} queued reports re-sent after a successful report"
        )
    if stats.reports_skipped:
        lines.append(
            f"  report cycles with nothing new to send (no report, as the agent does): {stats.reports_skipped}"
        )
    lines.append(
        f"  deployments: {stats.deployments} (new targets set up by agents); "
        f"sensors failed on purpose: {stats.injected_failures}"
    )
    return lines


def _error_lines(stats: FleetStats) -> list[str]:
    if not stats.errors and not stats.bad_answers:
        lines = ["Errors: none (no connection errors, no 5xx)"]
    else:
        reasons: Counter[str] = Counter()
        for (_, reason), count in stats.connection_errors.items():
            reasons[reason] += count
        detail = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        lines = [
            f"Errors: {sum(stats.connection_errors.values())} connection errors{f' ({detail})' if detail else ''}, "
            f"{stats.server_errors} 5xx answers, {stats.bad_answers} unreadable answers",
            *(f"  e.g. {sample}" for sample in stats.error_samples),
        ]
    if stats.refused:
        lines.append(
            f"Refused: {stats.refused} answers were 4xx (401: the key is unknown, e.g. rotated by another run with "
            "this --prefix; 403: the device is inactive; 429: the per-device rate limit). Like the real agent, an "
            "agent retries after 15 s x 2^(n-1) +-30 % (at most 15 min), ignoring Retry-After, and queues the "
            "failed report"
        )
    return lines
