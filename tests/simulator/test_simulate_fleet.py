"""``manage.py simulate_fleet`` (SPEC section 8): the fleet's layout, the transport, the scheduler, the command.

The pure parts (layout, URL parsing, scheduling with a fake transport) are tested without a server; the command
runs small fleets against pytest-django's ``live_server`` over real HTTP. The agent itself: ``test_agent.py``.
"""

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
from events.choices import EventTypeChoices
from events.models import Event
from reconciliation.services.targets import target_state_update
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from sensors.validation import target_config_validate
from simulator.agent import (
    AGENT_2025_11_06,
    AGENT_VERSIONS,
    AGENTS,
    POLL,
    SIMULATED_ERRORS,
    Agent,
    AgentSettings,
    Response,
    device_names,
    sensor_specs,
)
from simulator.fleet import HttpTransport, ServerAddress, percentile, run_fleet, server_address_parse
from tests.factories import DeviceFactory

UUID = "0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44"


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def make_agent() -> Agent:
    settings = AgentSettings(failure_rate=0.0, poll_interval=60.0, report_interval=60.0)
    return Agent(index=7, device_uuid=UUID, api_key="k" * 43, settings=settings, rng=random.Random(1), start=100.0)


def desired(count: int = 4) -> list[dict]:
    """The target's sensors as the server serves them (ids assigned)."""
    return [{"id": f"00000000-0000-4000-8000-{n:012d}", **spec} for n, spec in enumerate(sensor_specs(3, count))]


def state_answer(version: int, sensors: list[dict], *, uuid: str = UUID) -> Response:
    body = orjson.dumps({uuid: {"apps": {}, "config": {"sensors": sensors}, "version": version}})
    return Response(200, {"etag": f'"{version}"', "content-type": "application/json"}, body)


class FakeServer:
    """Answers like the agent endpoints, in memory: 200 then 304 for the same ETag; a report ``applied`` when its
    version or config (absent: as before) changed, else ``unchanged``; a report without version ``queued``."""

    def __init__(self, sensors: list[dict], version: int = 2) -> None:
        self.sensors = sensors
        self.version = version
        self.last_reports: dict[str, tuple] = {}
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
                    assert "seq" not in entry and "reported_at" not in entry
                    if "version" not in entry:
                        return Response(200, {}, orjson.dumps({uuid: {"outcome": "queued"}}))
                    before = server.last_reports.get(uuid)
                    state = (entry["version"], entry.get("config", before[1] if before else None))
                    server.last_reports[uuid] = state
                    outcome = "unchanged" if state == before else "applied"
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
    validated = target_config_validate({"sensors": sensors}, previous={})
    assert len(validated["sensors"]) == 8
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


@pytest.mark.parametrize("agent", AGENTS)
def test_run_fleet_schedules_many_agents_per_thread_and_stops_by_itself(agent):
    server = FakeServer(desired(3))
    settings = AgentSettings(failure_rate=0.0, poll_interval=0.1, report_interval=0.05, agent=agent)
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
    if agent == AGENT_2025_11_06:
        assert stats.outcomes["unchanged"] >= 12  # it reports every cycle
    else:
        # Nothing changed (its adapters poll every second or slower) and no metrics due: it stays quiet.
        assert stats.reports_skipped >= 12
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
        match = re.match(r"^  (GET \S+|PATCH \S+(?: \(queued\))?)?\s+(\S+)\s+(\d+)$", line)
        assert match, line
        endpoint = match.group(1) or endpoint
        method = endpoint.split()[0] + (" queued" if endpoint.endswith("(queued)") else "")
        counts[(method, match.group(2))] = int(match.group(3))
    return counts


def outcomes(output: str) -> dict[str, int]:
    found = re.findall(r"^  (applied|unchanged|stale|queued)\s+(\d+)$", output, re.M)
    return {name: int(count) for name, count in found}


@LIVE
@pytest.mark.parametrize("agent", AGENTS)
def test_simulate_fleet_without_failures_converges(live_server, agent):
    output = simulate(live_server, failure_rate=0.0, agent=agent)

    devices = list(Device.objects.filter(name__startswith="sim-").order_by("name"))
    assert [d.name for d in devices] == ["sim-0001", "sim-0002", "sim-0003"]
    assert "created 3 devices" in output
    for device in devices:
        target = DeviceTargetState.objects.get(device=device)
        current = DeviceCurrentState.objects.get(device=device)
        assert target.version == 2  # created (1), then one PUT-like write with all 4 sensors
        assert list(target.config) == ["sensors"] and len(target.config["sensors"]) == 4
        assert current.version == target.version
        assert not target.needs_deployment
        assert (device.agent_version, device.last_fetched_version) == (AGENT_VERSIONS[agent], 2)
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
    # Gzip bodies (Content-Encoding: gzip) that the server read and judged; no report failed, so none was queued.
    judged = outcomes(output)
    assert requests[("PATCH", "200")] == sum(judged.values()) == judged["applied"] + judged["unchanged"]
    assert judged["applied"] >= 3
    if agent == AGENT_2025_11_06:
        assert judged["unchanged"] >= 3  # it reports every cycle, the same report while nothing changes
    assert ("PATCH queued", "200") not in requests
    assert "sent gzip-compressed" in output
    assert Event.objects.filter(type=EventTypeChoices.CURRENT_STATE_REPORTED).count() >= 3
    assert "Errors: none" in output
    assert "devices: 3 in sync, 0 drifting" in output
    assert "deployed 12, failed 0" in output
    assert f"({CONCURRENCY} threads, keep-alive)" in output


@LIVE
def test_simulate_fleet_reuses_devices_rotates_keys_and_fails_every_sensor(live_server):
    old = [DeviceFactory(name=f"flaky-{n:04d}") for n in (1, 2)]
    target_state_update(uuid=old[0].uuid, user=None, config={"sensors": sensor_specs(0, 2)})

    output = simulate(live_server, prefix="flaky", devices=2, failure_rate=1.0, duration=1.5)

    assert "reused 2 existing devices and rotated their API keys" in output
    assert "replaced the target state of 2 reused devices" in output
    assert Device.objects.filter(name__startswith="flaky-").count() == 2
    assert all(device_for_key(api_key=device.api_key) is None for device in old)  # the old keys are dead
    rows = DeviceSensor.objects.filter(device__in=[d.pk for d in old])
    assert rows.count() == 8
    failed = 0
    for status, running, error in rows.values_list("deployment_status", "running", "deployment_error"):
        if running:
            # Set up on the agent but unable to reach its PLC: a matter of health, not of deployment.
            assert status == Status.DEPLOYED
        else:
            # Not set up: absent from the reported config; the error is the agent's health lastError.
            assert status == Status.FAILED
            assert error in SIMULATED_ERRORS
            failed += 1
    assert 0 < failed < 8  # with seed 7, both kinds of failure
    assert DeviceTargetState.objects.filter(device__in=[d.pk for d in old], needs_deployment=True).count() == 2
    assert "devices: 0 in sync, 2 drifting" in output
    assert f"deployed {8 - failed}, failed {failed} ({8 - failed} running)" in output
    assert outcomes(output)["applied"] >= 2


@LIVE
def test_simulate_fleet_exits_1_when_the_server_answers_5xx(live_server, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("simulated server bug")

    monkeypatch.setattr("reconciliation.services.reports.state_report_apply", broken)
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
    # The agent queued the failed report and backs off (15 s at least): nothing else was sent in the run.
    assert "1 failed reports queued without 'version'" in out.getvalue()


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
        ({"metrics_interval": 0}, "--metrics-interval must be at least"),
        ({"agent": "2025-12-01"}, "--agent must be one of 2025-11-06, 2025-11-22"),
        ({"concurrency": 0}, "--concurrency must be from 1 to"),
        ({"prefix": "no spaces"}, "--prefix must be"),
        ({"fail_label": "plant"}, "--fail-label must be one label as key=value"),
        ({"fail_label": "plant=c,site=a"}, "--fail-label must be one label as key=value"),
        ({"label": ["plant"]}, "--label must be KEY=VALUE or KEY=V1,V2,..."),
        ({"label": ["plant=a,,b"]}, "--label must be KEY=VALUE or KEY=V1,V2,..."),
        ({"label": ["plant=" + "x" * 64]}, "--label: "),
        ({"url": "localhost:8000"}, "--url: 'localhost:8000' is not an http:// or https:// URL"),
    ],
)
def test_simulate_fleet_refuses_options_out_of_range(options, message):
    arguments = {"url": "http://127.0.0.1:8000", "devices": 2, "sensors": 2, "failure_rate": 0.1, "duration": 1}
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("simulate_fleet", **{**arguments, **options}, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.django_db
def test_fleet_setup_labels_the_devices_in_turn_and_keeps_their_other_labels():
    from devices.labels import labels_of
    from devices.services import device_labels_update
    from reconciliation.management.commands.simulate_fleet import fleet_setup, label_cycles

    first = fleet_setup(prefix="lab", devices=3, sensors=1)
    device_labels_update(device_uuid=first.devices[0].uuid, set={"owner": "ops"}, remove=[], user=None)
    setup = fleet_setup(prefix="lab", devices=3, sensors=1, labels=label_cycles(["plant=a,b", "tier=edge"]))
    by_id = labels_of(Device.objects.filter(pk__in=[device.pk for device in setup.devices]))
    labels = [by_id[device.pk] for device in setup.devices]
    assert labels == [
        {"owner": "ops", "plant": "a", "tier": "edge"},
        {"plant": "b", "tier": "edge"},
        {"plant": "a", "tier": "edge"},
    ]
