"""``manage.py simulate_fleet`` (SPEC section 8) and the agent state machine behind it.

The pure parts (layout, URL parsing, the agent given canned answers, scheduling with a fake transport) are
tested without a server; the command runs small fleets against pytest-django's ``live_server`` over real HTTP.
"""

import copy
import gzip
import io
import random
import re
import socket
import threading
import time

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from devices.models import Device, DeviceCurrentState, DeviceTargetState
from devices.selectors import device_for_key
from devices.services import target_state_update
from events.choices import EventTypeChoices
from events.models import Event
from reconciliation.simulator import (
    AGENT_VERSION,
    FAILURE_ERRORS,
    POLL,
    REPORT,
    SIMULATED_ERRORS,
    Agent,
    AgentSettings,
    FleetStats,
    HttpTransport,
    Response,
    ServerAddress,
    TransportError,
    agent_step,
    device_names,
    percentile,
    run_fleet,
    sensor_specs,
    server_address_parse,
    traffic_summary,
)
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from sensors.validation import target_config_validate
from tests.factories import DeviceFactory

UUID = "0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44"


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def make_agent(failure_rate: float = 0.0, *, seed: int = 1, poll: float = 60.0, report: float = 10.0) -> Agent:
    settings = AgentSettings(failure_rate=failure_rate, poll_interval=poll, report_interval=report)
    return Agent(
        index=7, device_uuid=UUID, api_key="k" * 43, settings=settings, rng=random.Random(seed), start=100.0, seq_base=5
    )


def desired(count: int = 4) -> list[dict]:
    """The target's sensors as the server serves them (validated, ids assigned)."""
    return target_config_validate({"protocolAdapterDevices": sensor_specs(3, count)}, previous={})[
        "protocolAdapterDevices"
    ]


def state_answer(version: int, sensors: list[dict], *, uuid: str = UUID) -> Response:
    body = orjson.dumps({uuid: {"apps": {}, "config": {"protocolAdapterDevices": sensors}, "version": version}})
    return Response(200, {"etag": f'"{version}"', "content-type": "application/json"}, body)


def verdict_answer(outcome: str) -> Response:
    return Response(200, {"content-type": "application/json"}, orjson.dumps({UUID: {"outcome": outcome}}))


def sent_report(request) -> dict:
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body[:2] == b"\x1f\x8b"  # gzip magic
    body = orjson.loads(gzip.decompress(request.body))
    assert list(body) == [UUID]
    return body[UUID]


def without_clock(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key not in ("uptime", "seq")}


class FakeServer:
    """Answers like the agent endpoints, in memory: 200 then 304 for the same ETag; ``applied`` then ``unchanged``."""

    def __init__(self, sensors: list[dict], version: int = 2) -> None:
        self.sensors = sensors
        self.version = version
        self.last_reports: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []

    def transport(self):
        server = self

        class Transport:
            connections = 1

            def send(self, request):
                with server.lock:
                    server.requests.append((request.kind, request.path))
                    uuid = request.path.split("/")[4] if request.kind == POLL else None
                    if request.kind == POLL:
                        if request.headers.get("If-None-Match") == f'"{server.version}"':
                            return Response(304, {"etag": f'"{server.version}"'})
                        return state_answer(server.version, server.sensors, uuid=uuid)
                    body = orjson.loads(gzip.decompress(request.body))
                    ((uuid, entry),) = body.items()
                    stable = without_clock(entry)
                    outcome = "unchanged" if server.last_reports.get(uuid) == stable else "applied"
                    server.last_reports[uuid] = stable
                    return Response(200, {}, orjson.dumps({uuid: {"outcome": outcome}}))

            def close(self):
                pass

        return Transport()


# --------------------------------------------------------------------------------------------------------------
# The fleet's layout and the URL
# --------------------------------------------------------------------------------------------------------------


def test_device_names_are_numbered_and_padded():
    assert device_names("sim", 3) == ["sim-0001", "sim-0002", "sim-0003"]
    assert device_names("x", 12345)[-1] == "x-12345"


def test_sensor_specs_are_valid_mixed_and_stable():
    sensors = sensor_specs(5, 8)
    # What the staff write path accepts (the command stores them through target_state_update).
    validated = target_config_validate({"protocolAdapterDevices": sensors}, previous={})
    assert len(validated["protocolAdapterDevices"]) == 8
    assert {s["protocol"] for s in sensors} == {"modbus", "can", "opcua", "mqtt"}
    assert len({s["name"] for s in sensors}) == 8
    assert all(s["connection"] and s["dataPoints"] for s in sensors)
    # The same index gives the same document: a re-run makes no new target version.
    assert sensor_specs(5, 8) == sensors
    assert sensor_specs(6, 8) != sensors
    assert sensor_specs(1, 0) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", ServerAddress("http", "127.0.0.1", 8000, "")),
        ("http://localhost:8000/", ServerAddress("http", "localhost", 8000, "")),
        ("http://localhost/sensorsync/", ServerAddress("http", "localhost", 80, "/sensorsync")),
        ("https://127.0.0.1", ServerAddress("https", "127.0.0.1", 443, "")),
    ],
)
def test_server_address_parse(url, expected):
    assert server_address_parse(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1", "not an http:// or https:// URL"),
        ("127.0.0.1:8000", "not an http:// or https:// URL"),
        ("http://", "has no host"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://user:secret@127.0.0.1:8000", "plain base URL"),
        ("http://127.0.0.1:8000/?x=1", "plain base URL"),
    ],
)
def test_server_address_parse_refuses(url, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        server_address_parse(url)


def test_percentile_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


# --------------------------------------------------------------------------------------------------------------
# The agent, given canned answers
# --------------------------------------------------------------------------------------------------------------


def test_agent_polls_deploys_reports_then_gets_304_and_repeats_its_report():
    agent = make_agent()
    assert 100.0 <= agent.next_due() < 110.0  # jitter within the shorter interval
    assert agent.next_kind() == POLL

    first = agent.request(agent.next_due())
    assert (first.method, first.path) == ("GET", f"/api/v1/device/{UUID}/state")
    assert first.headers["X-Device-API-Key"] == "k" * 43
    assert "If-None-Match" not in first.headers

    sensors = desired(4)
    assert agent.handle_poll(state_answer(2, sensors), now=101.0) == "deployed"
    assert agent.etag == '"2"'
    assert (agent.next_kind(), agent.next_due()) == (REPORT, 101.0)  # reports right after deploying

    report = agent.request(101.0)
    assert (report.method, report.path) == ("PATCH", "/api/v1/device/state")
    entry = sent_report(report)
    assert entry["version"] == 2
    assert entry["config"] == {"protocolAdapterDevices": sensors}
    assert entry["apps"] == {}
    assert entry["agent_version"] == AGENT_VERSION
    assert entry["local_ip"].startswith("10.")
    assert entry["sensor_health"] == {s["name"]: {"healthy": True} for s in sensors}
    assert entry["seq"] == 6
    assert report.json_size > len(report.body)
    assert agent.handle_report(verdict_answer("applied"), now=101.2) == "applied"
    assert agent.next_report_at == pytest.approx(111.2)

    second = agent.poll_request()
    assert second.headers["If-None-Match"] == '"2"'
    assert agent.handle_poll(Response(304, {"etag": '"2"'}), now=161.0) == "not_modified"
    assert agent.next_poll_at == 221.0

    again = sent_report(agent.request(162.0))
    assert without_clock(again) == without_clock(entry)  # the same report, only the clock moved
    assert again["seq"] == 7
    assert again["uptime"] > entry["uptime"]


def test_agent_redeploys_only_on_a_new_version():
    agent = make_agent(0.5, seed=3)
    sensors = desired(8)
    agent.handle_poll(state_answer(2, sensors), now=101.0)
    health = copy.deepcopy(agent.sensor_health)
    running = copy.deepcopy(agent.running)

    # The same version again (say the ETag was lost): the failure decisions stand.
    assert agent.handle_poll(state_answer(2, sensors), now=161.0) == "same_version"
    assert (agent.sensor_health, agent.running) == (health, running)

    changed = copy.deepcopy(sensors)
    changed[0]["enabled"] = False
    changed[1]["pollInterval"] = 250
    assert agent.handle_poll(state_answer(3, changed), now=221.0) == "deployed"
    assert agent.applied_version == 3
    assert changed[0]["name"] not in agent.sensor_health  # disabled: correctly not running, not a failure
    assert all(s["name"] != changed[0]["name"] for s in agent.running)
    assert sent_report(agent.request(221.0))["version"] == 3


def test_agent_failure_rate_one_fails_every_enabled_sensor_with_a_realistic_error():
    agent = make_agent(1.0)
    sensors = desired(8)
    sensors[2]["enabled"] = False
    agent.handle_poll(state_answer(2, sensors), now=101.0)
    entry = sent_report(agent.request(101.0))
    assert entry["config"]["protocolAdapterDevices"] == []
    enabled = [s for s in sensors if s["enabled"]]
    assert set(entry["sensor_health"]) == {s["name"] for s in enabled}
    for sensor in enabled:
        health = entry["sensor_health"][sensor["name"]]
        assert health["healthy"] is False
        assert health["lastError"] in FAILURE_ERRORS[sensor["protocol"]]
    assert agent.injected_failures == 7


def test_agent_failures_are_reproducible_with_a_seed():
    def decisions(seed):
        agent = make_agent(0.5, seed=seed)
        agent.handle_poll(state_answer(2, desired(16)), now=101.0)
        return agent.sensor_health, agent.next_poll_at

    assert decisions(11) == decisions(11)
    assert decisions(11) != decisions(12)


@pytest.mark.parametrize("status", [401, 403, 500, 503])
def test_agent_keeps_its_state_on_a_refused_poll(status):
    agent = make_agent()
    agent.handle_poll(state_answer(2, desired(2)), now=101.0)
    assert agent.handle_poll(Response(status, {}, b'{"error": "x"}'), now=161.0) == "error"
    assert (agent.etag, agent.applied_version, agent.next_poll_at) == ('"2"', 2, 221.0)
    assert agent.handle_report(Response(status, {}, b"{}"), now=162.0) is None
    assert agent.next_report_at == 172.0


def test_agent_backs_off_when_the_server_asks():
    agent = make_agent(poll=1.0, report=0.5)
    agent.handle_poll(state_answer(2, desired(2)), now=101.0)
    assert agent.handle_poll(Response(429, {"retry-after": "7"}, b"{}"), now=102.0) == "error"
    assert agent.next_poll_at == 109.0
    assert agent.handle_report(Response(503, {"retry-after": "5"}, b"{}"), now=102.0) is None
    assert agent.next_report_at == 107.0
    agent.handle_report(Response(429, {"retry-after": "soon"}, b"{}"), now=110.0)
    assert agent.next_report_at == 110.5  # unreadable: the normal interval


def test_agent_reads_an_unreadable_answer_as_an_error():
    agent = make_agent()
    assert agent.handle_poll(Response(200, {}, b"<html>"), now=101.0) == "error"
    assert agent.handle_poll(state_answer(2, [], uuid="another"), now=102.0) == "error"
    assert agent.applied_version is None
    assert agent.next_report_at == float("inf")  # nothing deployed, nothing to report


def test_agent_step_counts_answers_and_connection_errors():
    agent = make_agent()
    stats = FleetStats()

    class Refusing:
        def send(self, request):
            raise TransportError("connection refused")

    agent_step(agent, Refusing(), stats, clock=lambda: 105.0)
    assert stats.connection_errors == {(POLL, "connection refused"): 1}
    assert stats.errors == 1
    assert agent.next_poll_at == 165.0

    class Answering:
        def send(self, request):
            return state_answer(2, desired(2)) if request.kind == POLL else verdict_answer("applied")

    agent.next_poll_at = 105.0
    agent_step(agent, Answering(), stats, clock=lambda: 105.0)
    agent_step(agent, Answering(), stats, clock=lambda: 105.0)
    assert stats.requests == {(POLL, 200): 1, (REPORT, 200): 1}
    assert stats.outcomes == {"applied": 1}
    assert stats.deployments == 1
    assert stats.report_bytes_sent > 0
    summary = "\n".join(traffic_summary(stats))
    assert "connection refused 1" in summary
    assert "GET /api/v1/device/<uuid>/state" in summary


def test_summary_explains_refused_answers():
    agent = make_agent()
    stats = FleetStats()

    class Unknown:
        def send(self, request):
            return Response(401, {}, b'{"error": "not_authenticated"}')

    agent_step(agent, Unknown(), stats, clock=lambda: 105.0)
    assert stats.errors == 0  # a 4xx is the server refusing, not failing
    summary = "\n".join(traffic_summary(stats))
    assert re.search(r"GET /api/v1/device/<uuid>/state\s+401\s+1", summary)
    assert "Refused: 1 answers were 4xx" in summary


def test_http_transport_keeps_the_connection_and_retries_once_when_the_server_dropped_it():
    """The server answers one request per connection without saying so: the reused connection is found closed,
    and the request goes out again on a new one."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    listener = socket.create_server(("127.0.0.1", 0))
    served = []

    def serve():
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                served.append(conn.recv(65536).split(b"\r\n", 1)[0])
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = HttpTransport(ServerAddress("http", "127.0.0.1", listener.getsockname()[1], ""), timeout=5)
    agent = make_agent()
    try:
        first = transport.send(agent.poll_request())
        time.sleep(0.05)  # let the server close its side
        second = transport.send(agent.poll_request())
    finally:
        transport.close()
        thread.join(timeout=5)
        listener.close()
    assert (first.status, second.status) == (200, 200)
    assert transport.connections == 2
    assert served == [f"GET /api/v1/device/{UUID}/state HTTP/1.1".encode()] * 2


def test_run_fleet_schedules_many_agents_per_thread_and_stops_by_itself():
    server = FakeServer(desired(3))
    settings = AgentSettings(failure_rate=0.0, poll_interval=0.1, report_interval=0.05)
    start = time.monotonic()
    agents = [
        Agent(
            index=n,
            device_uuid=f"00000000-0000-4000-8000-{n:012d}",
            api_key=f"key-{n}",
            settings=settings,
            rng=random.Random(n),
            start=start,
        )
        for n in range(12)
    ]
    ticks = []
    run = run_fleet(
        agents,
        address=ServerAddress("http", "127.0.0.1", 9, ""),
        concurrency=3,
        duration=0.6,
        transport_factory=server.transport,
        on_tick=lambda elapsed, stats: ticks.append(elapsed),
        tick=0.2,
        start=start,
    )
    assert run.threads == 3
    assert 0.4 <= run.elapsed < 1.5
    assert ticks
    stats = run.stats
    assert stats.requests[(POLL, 200)] == 12  # one full answer per agent, then 304s
    assert stats.requests[(POLL, 304)] >= 12
    assert stats.outcomes["applied"] == 12
    assert stats.outcomes["unchanged"] >= 12
    assert stats.errors == 0
    assert {path for kind, path in server.requests if kind == POLL} == {
        f"/api/v1/device/{agent.device_uuid}/state" for agent in agents
    }


# --------------------------------------------------------------------------------------------------------------
# The command, against a live server
# --------------------------------------------------------------------------------------------------------------

LIVE = pytest.mark.django_db(transaction=True)
# The live server shares the test's in-memory SQLite database through one shared-cache connection, whose table
# locks fail at once instead of waiting ("database table is locked"): one agent thread there, several on PostgreSQL.
CONCURRENCY = 1 if connection.vendor == "sqlite" else 3


def simulate(live_server, **options) -> str:
    out = io.StringIO()
    defaults = {
        "url": live_server.url,
        "devices": 3,
        "sensors": 4,
        "failure_rate": 0.0,
        "duration": 2.0,
        "poll_interval": 0.3,
        "report_interval": 0.2,
        "concurrency": CONCURRENCY,
        "seed": 7,
        "quiet": True,
    }
    call_command("simulate_fleet", **{**defaults, **options}, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def requests_table(output: str) -> dict[tuple[str, str], int]:
    """The "Requests by endpoint and status" table: (endpoint, status) -> count."""
    table = output.split("Requests by endpoint and status\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    counts, endpoint = {}, None
    for line in table:
        match = re.match(r"^  (GET \S+|PATCH \S+)?\s+(\S+)\s+(\d+)$", line)
        assert match, line
        endpoint = match.group(1) or endpoint
        counts[(endpoint.split()[0], match.group(2))] = int(match.group(3))
    return counts


def outcomes(output: str) -> dict[str, int]:
    return {name: int(count) for name, count in re.findall(r"^  (applied|unchanged|stale)\s+(\d+)$", output, re.M)}


@LIVE
def test_simulate_fleet_without_failures_converges(live_server):
    output = simulate(live_server, failure_rate=0.0)

    devices = list(Device.objects.filter(name__startswith="sim-").order_by("name"))
    assert [d.name for d in devices] == ["sim-0001", "sim-0002", "sim-0003"]
    assert "created 3 devices" in output
    for device in devices:
        target = DeviceTargetState.objects.get(device=device)
        current = DeviceCurrentState.objects.get(device=device)
        assert target.version == 2  # created (1), then one PUT-like write with all 4 sensors
        assert len(target.config["protocolAdapterDevices"]) == 4
        assert current.version == target.version
        assert not target.needs_deployment
        assert (device.agent_version, device.last_fetched_version) == (AGENT_VERSION, 2)
        assert device.ip_address.startswith("10.")
    sensors = DeviceSensor.objects.filter(device__in=devices)
    assert sensors.count() == 12
    assert set(sensors.values_list("deployment_status", "running", "synced_to_config")) == {
        (Status.DEPLOYED, True, True)
    }
    assert {p for p in sensors.values_list("protocol", flat=True)} == {"modbus", "can", "opcua", "mqtt"}

    requests = requests_table(output)
    assert requests[("GET", "200")] == 3  # the first poll of each agent; the target never changed
    assert requests[("GET", "304")] >= 3  # every later poll
    # Gzip bodies (Content-Encoding: gzip) that the server read and judged.
    assert requests[("PATCH", "200")] == sum(outcomes(output).values())
    assert outcomes(output)["applied"] == 3
    assert outcomes(output)["unchanged"] >= 3
    assert "sent gzip-compressed" in output
    assert Event.objects.filter(type=EventTypeChoices.CURRENT_STATE_REPORTED).count() == 3
    assert "Errors: none" in output
    assert "devices: 3 in sync, 0 drifting" in output
    assert "deployed 12, failed 0" in output
    assert f"({CONCURRENCY} threads, keep-alive)" in output


@LIVE
def test_simulate_fleet_reuses_devices_rotates_keys_and_fails_every_sensor(live_server):
    old = [DeviceFactory(name=f"flaky-{n:04d}") for n in (1, 2)]
    target_state_update(uuid=old[0].uuid, user=None, config={"protocolAdapterDevices": sensor_specs(0, 2)})

    output = simulate(live_server, prefix="flaky", devices=2, failure_rate=1.0, duration=1.5)

    assert "reused 2 existing devices and rotated their API keys" in output
    assert "replaced the target state of 2 reused devices" in output
    assert Device.objects.filter(name__startswith="flaky-").count() == 2
    assert all(device_for_key(api_key=device.api_key) is None for device in old)  # the old keys are dead
    rows = DeviceSensor.objects.filter(device__in=[d.pk for d in old])
    assert rows.count() == 8
    for status, running, error in rows.values_list("deployment_status", "running", "deployment_error"):
        assert (status, running) == (Status.FAILED, False)
        assert error in SIMULATED_ERRORS
    assert DeviceTargetState.objects.filter(device__in=[d.pk for d in old], needs_deployment=True).count() == 2
    assert "devices: 0 in sync, 2 drifting" in output
    assert "failed 8 (0 running)" in output
    assert outcomes(output)["applied"] == 2


@LIVE
def test_simulate_fleet_exits_1_when_the_server_answers_5xx(live_server, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("simulated server bug")

    monkeypatch.setattr("reconciliation.services.state_report_apply", broken)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=r"failed with a connection error or a 5xx answer") as caught:
        call_command(
            "simulate_fleet",
            url=live_server.url,
            devices=1,
            sensors=2,
            failure_rate=0.0,
            duration=0.8,
            poll_interval=0.3,
            report_interval=0.2,
            stdout=out,
            stderr=err,
        )
    assert caught.value.returncode == 1
    assert re.search(r"\[\s*[\d.]+ s / 0.8 s\] requests \d+  errors [1-9]", err.getvalue())  # the progress line
    assert requests_table(out.getvalue())[("PATCH", "500")] >= 1
    assert "5xx answers" in out.getvalue()


@pytest.mark.django_db
def test_simulate_fleet_refuses_an_unreachable_server_before_writing_anything():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(CommandError, match=r"Cannot reach the server at http://127\.0\.0\.1:\d+: connection refused"):
        call_command(
            "simulate_fleet",
            url=f"http://127.0.0.1:{port}",
            devices=2,
            sensors=2,
            failure_rate=0.1,
            duration=1,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not Device.objects.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"devices": 0}, "--devices must be from 1 to"),
        ({"devices": 10_001}, "--devices must be from 1 to"),
        ({"sensors": -1}, "--sensors must be from 0 to"),
        ({"failure_rate": 1.5}, "--failure-rate is a probability from 0 to 1"),
        ({"failure_rate": -0.1}, "--failure-rate is a probability from 0 to 1"),
        ({"duration": 0}, "--duration must be more than 0"),
        ({"poll_interval": 0}, "--poll-interval must be at least"),
        ({"concurrency": 0}, "--concurrency must be from 1 to"),
        ({"prefix": "no spaces"}, "--prefix must be"),
        ({"url": "localhost:8000"}, "--url: 'localhost:8000' is not an http:// or https:// URL"),
    ],
)
def test_simulate_fleet_refuses_options_out_of_range(options, message):
    arguments = {"url": "http://127.0.0.1:8000", "devices": 2, "sensors": 2, "failure_rate": 0.1, "duration": 1}
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("simulate_fleet", **{**arguments, **options}, stdout=io.StringIO(), stderr=io.StringIO())
