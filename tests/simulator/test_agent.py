"""The simulated agent (``simulator.agent.Agent``) against the recorded exchanges of the real one.

``../shared/agent-wire/*.json`` holds what the unmodified upstream agent (Iotistica/iotistic ``agent/``) sent, in
both generations the simulator speaks as; these tests drive the pure state machine with canned answers, no server,
and hold its bodies to those recordings key for key.
"""

import gzip
import math
import random
import uuid
from pathlib import Path

import orjson
import pytest
from django.conf import settings

from simulator.agent import (
    AGENT_2025_11_06,
    AGENT_2025_11_22,
    AGENT_VERSIONS,
    AGENTS,
    FAILURE_ERRORS,
    POLL,
    QUEUED,
    REPORT,
    Agent,
    AgentSettings,
    Response,
    sensor_specs,
)
from simulator.fleet import FleetStats, TransportError, agent_step, traffic_summary

UUID = "0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44"
KEY = "k" * 43
WIRE = Path(settings.BASE_DIR).parent / "shared" / "agent-wire"
METRICS = ("cpu_usage", "memory_usage", "memory_total", "storage_usage", "storage_total", "temperature", "uptime")
DOWN = "down"  # an answer that never comes: the connection fails


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def recorded(name: str) -> list[dict]:
    """The bodies of the PATCH requests of one recording (the report of ``{uuid}``), in order."""
    exchanges = orjson.loads((WIRE / f"{name}.json").read_bytes())["exchanges"]
    return [exchange["body"]["{uuid}"] for exchange in exchanges if exchange["method"] == "PATCH"]


def recorded_answer(name: str, index: int) -> dict:
    exchanges = orjson.loads((WIRE / f"{name}.json").read_bytes())["exchanges"]
    return [exchange for exchange in exchanges if exchange["method"] == "GET"][index]


def keys(entry: dict, *, leave_out=("temperature",)) -> list[str]:
    """The keys of a report in order. ``temperature``: the recordings ran in a container without a temperature
    sensor (the agent then leaves the key out); the simulated devices have one."""
    return [key for key in entry if key not in leave_out]


def make_agent(
    agent: str = AGENT_2025_11_22,
    failure_rate: float = 0.0,
    *,
    seed: int = 1,
    poll: float = 60.0,
    report: float = 60.0,
    metrics: float = 300.0,
    index: int = 7,
) -> Agent:
    settings_ = AgentSettings(
        failure_rate=failure_rate, poll_interval=poll, report_interval=report, metrics_interval=metrics, agent=agent
    )
    return Agent(index=index, device_uuid=UUID, api_key=KEY, settings=settings_, rng=random.Random(seed), start=100.0)


def served_sensors(count: int = 4, *, index: int = 3) -> list[dict]:
    """Sensors as the server serves them under ``config.sensors`` (SPEC section 3, ids assigned)."""
    return [{"id": str(uuid.UUID(int=n + 1, version=4)), **spec} for n, spec in enumerate(sensor_specs(index, count))]


def state_answer(version: int, config: dict, *, uuid_: str = UUID) -> Response:
    body = orjson.dumps({uuid_: {"apps": {}, "config": config, "version": version}})
    return Response(200, {"etag": f'"{version}"', "content-type": "application/json"}, body)


def verdict(outcome: str, status: int = 200) -> Response:
    return Response(status, {"content-type": "application/json"}, orjson.dumps({UUID: {"outcome": outcome}}))


def refused(status: int = 400) -> Response:
    return Response(status, {"content-type": "application/json"}, b'{"error": "validation_error"}')


def sent(request) -> dict:
    """The report a PATCH carries, checking it goes out as the agent sends it."""
    assert (request.method, request.path) == ("PATCH", "/api/v1/device/state")
    assert request.headers["X-Device-API-Key"] == KEY
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body[:2] == b"\x1f\x8b"
    body = orjson.loads(gzip.decompress(request.body))
    assert list(body) == [UUID]
    assert request.json_size > len(request.body) or len(request.body) < 200
    return body[UUID]


def boot(agent: Agent, config: dict, *, version: int = 1, now: float = 100.0) -> str:
    """The agent's first poll, answered with ``config``: its reporting loop starts then."""
    request = agent.request(agent.next_due())
    assert request.kind == POLL
    return agent.handle(request, state_answer(version, config), now)


def poll(agent: Agent, config: dict, *, version: int, now: float) -> str:
    return agent.handle_poll(state_answer(version, config), now)


def cycle(agent: Agent, now: float, *answers) -> list[tuple[str, dict]]:
    """One report cycle at ``now``: the report, then the queued reports a success flushes, each answered in turn
    (by default: 200 ``applied`` to the report, 200 ``queued`` to a queued one). Returns (kind, report) sent."""
    answers = list(answers)
    done = []
    request = agent.report_request(now)
    while request is not None:
        entry = sent(request)
        done.append((request.kind, entry))
        answer = answers.pop(0) if answers else verdict("queued" if request.kind == QUEUED else "applied")
        if answer == DOWN:
            agent.handle_failure(request, now)
        else:
            agent.handle(request, answer, now)
        request = agent.queued_request() if agent.flushing else None
    return done


def report_at(agent: Agent, now: float, *answers) -> dict | None:
    """The report of the cycle at ``now`` (None: nothing sent)."""
    done = cycle(agent, now, *answers)
    return done[0][1] if done else None


def assert_no_clock_fields(entry: dict) -> None:
    assert "seq" not in entry
    assert "reported_at" not in entry


# --------------------------------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", AGENTS)
def test_polls_with_its_key_and_etag_every_poll_interval(agent):
    sim = make_agent(agent)
    assert 100.0 <= sim.next_due() < 160.0
    first = sim.request(sim.next_due())
    assert (first.method, first.path, first.body) == ("GET", f"/api/v1/device/{UUID}/state", None)
    assert first.headers["X-Device-API-Key"] == KEY
    assert "If-None-Match" not in first.headers
    assert sim.next_report_at == math.inf  # the reporting loop starts after the first poll

    assert sim.handle(first, state_answer(2, {"sensors": served_sensors(2)}), 101.0) == "deployed"
    assert (sim.next_poll_at, sim.next_report_at) == (161.0, 101.0)
    second = sim.poll_request()
    assert second.headers["If-None-Match"] == '"2"'
    assert sim.handle_poll(Response(304, {"etag": '"2"'}), 161.0) == "not_modified"
    assert sim.next_poll_at == 221.0


@pytest.mark.parametrize("agent", AGENTS)
def test_reads_its_sensors_from_config_sensors_only(agent):
    sim = make_agent(agent)
    sensors = served_sensors(3)
    boot(sim, {"protocolAdapterDevices": sensors})  # the seed note's key: the real agent never reads it
    assert sim.sensors == {}
    assert poll(sim, {"sensors": sensors}, version=2, now=160.0) == "deployed"
    assert list(sim.sensors) == [s["name"] for s in sensors]
    entry = report_at(sim, 160.0)
    assert [s["name"] for s in entry["config"]["sensors"]] == [s["name"] for s in sensors]
    assert entry["version"] == 2


@pytest.mark.parametrize("agent", AGENTS)
def test_reports_the_version_it_last_fetched_and_redeploys_only_a_changed_target(agent):
    sim = make_agent(agent, 0.5, seed=3)
    sensors = served_sensors(8)
    boot(sim, {"sensors": sensors}, version=2)
    runs = dict(sim.sensors)
    # A new version with the same content (say a rollback): nothing restarts, but the version is the new one.
    assert poll(sim, {"sensors": sensors}, version=3, now=160.0) == "same_target"
    assert sim.sensors == runs
    assert report_at(sim, 160.0)["version"] == 3

    changed = [dict(s) for s in sensors]
    changed[1]["pollInterval"] = 250
    assert poll(sim, {"sensors": changed}, version=4, now=220.0) == "deployed"
    # Only the changed sensor started again: the others keep their run (and their failure, if any).
    assert {name for name, run in runs.items() if sim.sensors.get(name) is not run} <= {changed[1]["name"]}
    assert report_at(sim, 220.0)["version"] == 4


@pytest.mark.parametrize("status", [401, 403, 500, 503])
def test_a_refused_poll_keeps_the_state_and_backs_off(status):
    sim = make_agent()
    boot(sim, {"sensors": served_sensors(2)}, version=2)
    assert sim.handle_poll(refused(status), 160.0) == "error"
    assert (sim.etag, sim.target_version, len(sim.sensors)) == ('"2"', 2, 2)
    assert 160.0 + 15 * 0.7 <= sim.next_poll_at <= 160.0 + 15 * 1.3
    assert sim.handle_poll(refused(status), 200.0) == "error"
    assert 200.0 + 30 * 0.7 <= sim.next_poll_at <= 200.0 + 30 * 1.3
    assert sim.handle_poll(Response(304, {}), 300.0) == "not_modified"
    assert sim.next_poll_at == 360.0  # a success: the normal interval again


def test_an_unreadable_answer_is_an_error_and_an_answer_for_another_device_is_ignored():
    sim = make_agent()
    assert sim.handle_poll(Response(200, {}, b"<html>"), 101.0) == "error"
    assert sim.handle_poll(state_answer(2, {"sensors": served_sensors(1)}, uuid_="another"), 160.0) == "no_state"
    assert (sim.target_version, sim.sensors, sim.poll_errors) == (0, {}, 0)


# --------------------------------------------------------------------------------------------------------------
# The 2025-11-06 agent, against its recordings
# --------------------------------------------------------------------------------------------------------------


def test_2025_11_06_bodies_match_its_recordings_key_for_key():
    first, plain, metrics = recorded("agent-2025-11-06")
    sim = make_agent(AGENT_2025_11_06)
    answer = recorded_answer("agent-2025-11-06", 0)["answered_by_sensorsync_today"]["body"]
    boot(sim, orjson.loads(answer)["{uuid}"]["config"])  # {"protocolAdapterDevices": []}: no sensors for it

    entry = report_at(sim, 100.0)
    assert keys(entry) == list(first)
    assert list(entry).index("temperature") == list(entry).index("storage_total") + 1
    assert entry["config"] == {} == first["config"]  # nothing registered yet: no sensors list, no echo
    assert (entry["agent_version"], entry["local_ip"]) == (AGENT_VERSIONS[AGENT_2025_11_06], sim.local_ip)
    assert isinstance(entry["uptime"], float)
    assert [list(p) for p in entry["top_processes"]] == [list(p) for p in first["top_processes"][:1]]
    assert [list(i) for i in entry["network_interfaces"]] == [list(i) for i in first["network_interfaces"]]

    assert keys(report_at(sim, 160.0)) == list(plain)  # every cycle: apps, config, is_online, version

    sensors = served_sensors(2)
    poll(sim, {"sensors": sensors}, version=3, now=200.0)
    for now in (220.0, 280.0, 340.0):
        assert "cpu_usage" not in report_at(sim, now)
    entry = report_at(sim, 400.0)  # 300 s after the first metrics
    assert keys(entry, leave_out=("temperature", "protocol_adapters_health")) == list(metrics)
    assert entry["config"] == {"sensors": sensors}
    health = entry["protocol_adapters_health"]
    assert {protocol: [s["deviceName"] for s in statuses] for protocol, statuses in health.items()} == {
        s["protocol"]: [s["name"]] for s in sensors
    }
    for statuses in health.values():
        assert [list(status) for status in statuses] == [
            ["deviceName", "connected", "lastPoll", "errorCount", "lastError"]
        ]
        assert statuses[0]["connected"] is True
        assert statuses[0]["lastPoll"].endswith("Z")


def test_2025_11_06_reports_the_sensors_as_it_was_served_them():
    running, _ = recorded("agent-2025-11-06-running-a-sensor")
    sensor = running["config"]["sensors"][0]
    sim = make_agent(AGENT_2025_11_06)
    boot(sim, {"sensors": [sensor]}, version=2)
    report_at(sim, 100.0)  # the first: with facts and metrics
    entry = report_at(sim, 160.0)
    assert orjson.dumps(entry) == orjson.dumps(running)  # the recorded report: key order, values and types
    assert keys(entry["config"]["sensors"][0]) == list(sensor)


def test_2025_11_06_queues_a_failed_report_only_once_offline_and_strips_it_like_the_recording():
    _, queued = recorded("agent-2025-11-06-running-a-sensor")
    sim = make_agent(AGENT_2025_11_06)
    boot(sim, {"sensors": served_sensors(1)})
    report_at(sim, 100.0)
    for n, now in enumerate((160.0, 220.0, 280.0), start=1):  # three failures in a row: not queued yet
        cycle(sim, now, DOWN if n % 2 else refused(503))
        assert not sim.queue
    assert sim.online is False
    entry = report_at(sim, 400.0, refused(502))  # the fourth, with metrics: queued
    assert "protocol_adapters_health" in entry
    assert len(sim.queue) == 1
    assert keys(sim.queue[0]) == list(queued)
    assert "version" not in sim.queue[0]

    done = cycle(sim, 460.0)  # the next success flushes it
    assert [kind for kind, _ in done] == [REPORT, QUEUED]
    assert done[1][1] == sim.queued_form(entry)
    assert not sim.queue
    assert sim.online is True


# --------------------------------------------------------------------------------------------------------------
# The 2025-11-22 agent, against its recordings
# --------------------------------------------------------------------------------------------------------------


def test_2025_11_22_replays_its_recording_a_refused_first_report_re_sent_for_ever():
    first, plain, queued = recorded("agent-2025-11-22")
    sim = make_agent(AGENT_2025_11_22)
    answer = recorded_answer("agent-2025-11-22", 0)["answered_by_sensorsync_today"]["body"]
    boot(sim, orjson.loads(answer)["{uuid}"]["config"])

    entry = report_at(sim, 100.0, refused(400))
    assert keys(entry) == list(first)
    assert entry["config"] == first["config"]  # the served key echoed, its own (empty) sensors list
    assert entry["endpoints_health"] == {}
    assert entry["agent_version"] == AGENT_VERSIONS[AGENT_2025_11_22]
    assert isinstance(entry["uptime"], float)
    assert len(sim.queue) == 1  # every failed report is queued

    # Nothing was accepted yet, so config and health go along again; the facts were sent once already.
    done = cycle(sim, 160.0, verdict("applied"), refused(400))
    assert [kind for kind, _ in done] == [REPORT, QUEUED]
    assert orjson.dumps(done[0][1]) == orjson.dumps(plain)  # the recorded report: order, values and types
    assert keys(done[1][1]) == list(queued)
    assert {key: value for key, value in done[1][1].items() if key != "temperature"} == {
        key: entry[key] for key in queued
    }
    assert len(sim.queue) == 1  # refused: it stays queued

    assert cycle(sim, 220.0) == []  # nothing changed, no metrics due: no report
    done = cycle(sim, 400.0, verdict("unchanged"), refused(400))  # metrics due: a report, then the queue again
    assert [kind for kind, _ in done] == [REPORT, QUEUED]
    assert done[1][1] == sim.queue[0]
    done = cycle(sim, 700.0)
    assert [kind for kind, _ in done] == [REPORT, QUEUED]
    assert not sim.queue  # accepted at last (the new server answers a queued report 200 "queued")


def test_2025_11_22_reports_its_own_sensor_row_shape():
    (running,) = recorded("agent-2025-11-22-running-a-sensor")
    row = running["config"]["sensors"][0]
    served = {
        "id": "6f1c0000-0000-4000-8000-000000000001",
        "name": "modbus-sensor-1",
        "protocol": "modbus",
        "enabled": True,
        "pollInterval": 5000,
        "connection": {"host": "127.0.0.1", "port": 5020, "unitId": 1},
        "dataPoints": [{"name": "temperature", "address": 40001, "type": "float32", "unit": "C"}],
        "metadata": {},
    }
    disabled = {**served, "id": "6f1c0000-0000-4000-8000-000000000002", "name": "opcua-1", "protocol": "opcua"}
    disabled.update(enabled=False, connection={"endpointUrl": "opc.tcp://127.0.0.1:4840"})
    sim = make_agent(AGENT_2025_11_22)
    boot(sim, {"sensors": [served, disabled], "logging": {"level": "debug"}}, version=2)
    entry = report_at(sim, 100.0)

    assert list(entry["config"]) == ["logging", "sensors"]  # every other served key, echoed
    mine, off = entry["config"]["sensors"]
    # The recorded row, key order, values and JSON types (enabled 1, not true), but for its own id.
    assert orjson.dumps({**mine, "id": None}) == orjson.dumps({**row, "id": None})
    assert uuid.UUID(mine["id"]) and mine["id"] != served["id"]  # its own id
    assert "dataPoints" not in mine
    assert (type(off["enabled"]), off["enabled"]) == (int, 0)
    assert (orjson.loads(off["connectionString"]), off["metadata"]) == (disabled["connection"], {})

    health = entry["endpoints_health"]
    assert list(health) == ["modbus-sensor-1", "opcua-1"]
    expected_keys = [
        "protocol",
        "status",
        "connected",
        "lastPoll",
        "lastSeen",
        "errorCount",
        "lastError",
        "responseTimeMs",
        "pollSuccessRate",
        "registersUpdated",
        "communicationQuality",
    ]
    assert all(list(h) == expected_keys for h in health.values())
    online = health["modbus-sensor-1"]
    assert (online["protocol"], online["status"], online["connected"]) == ("modbus", "online", True)
    assert (online["errorCount"], online["lastError"], online["pollSuccessRate"]) == (0, None, 1)
    assert online["communicationQuality"] == "good"
    assert online["lastPoll"] == online["lastSeen"] == "2026-01-01T00:00:00.000Z"  # polled as it started
    assert isinstance(online["responseTimeMs"], int) and 0 <= online["registersUpdated"] <= 1
    assert health["opcua-1"]["status"] == health["opcua-1"]["communicationQuality"] == "disabled"
    assert health["opcua-1"]["connected"] is False


def test_2025_11_22_leaves_config_out_while_unchanged_and_sends_health_when_it_changes():
    sim = make_agent(AGENT_2025_11_22)
    sensors = served_sensors(2)
    boot(sim, {"sensors": sensors})
    assert "config" in report_at(sim, 100.0)

    entry = report_at(sim, 160.0)  # its adapters polled since: health changed, config did not
    assert list(entry) == ["apps", "is_online", "version", "endpoints_health"]
    assert entry["endpoints_health"][sensors[0]["name"]]["lastPoll"] > "2026-01-01T00:00:00.000Z"

    # A report that fails does not count as sent: the config goes along again until one is accepted.
    poll(sim, {"sensors": [*sensors, *served_sensors(3)[2:]]}, version=2, now=200.0)
    assert "config" in report_at(sim, 220.0, refused(503))
    assert "config" in report_at(sim, 260.0, verdict("applied"), verdict("queued"))
    assert "config" not in report_at(sim, 320.0)


def test_2025_11_22_with_nothing_to_say_reports_only_on_metrics_cycles():
    sim = make_agent(AGENT_2025_11_22)
    boot(sim, {"sensors": []})
    assert report_at(sim, 100.0) is not None
    for now in (160.0, 220.0, 280.0, 340.0):
        assert report_at(sim, now) is None
        assert sim.next_report_at == now + 60.0
    assert sim.reports_skipped == 4
    entry = report_at(sim, 400.0)
    assert keys(entry) == [
        "apps",
        "is_online",
        "version",
        "endpoints_health",
        "cpu_usage",
        "memory_usage",
        "memory_total",
        "storage_usage",
        "storage_total",
        "uptime",
        "top_processes",
        "network_interfaces",
    ]  # health on every metrics cycle; no config (unchanged); facts and local_ip not again


# --------------------------------------------------------------------------------------------------------------
# Both generations: cadence, facts, queue, backoff, failures
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", AGENTS)
def test_metrics_every_metrics_interval_and_facts_once_per_start(agent):
    sim = make_agent(agent, report=30.0, metrics=120.0)
    boot(sim, {"sensors": served_sensors(1)})
    reports = {
        now: report_at(sim, now, refused(500) if now == 100.0 else verdict("applied")) for now in range(100, 400, 30)
    }
    with_metrics = [now for now, entry in reports.items() if entry and "cpu_usage" in entry]
    assert with_metrics == [100, 220, 340]
    for now, entry in reports.items():
        if entry:
            assert_no_clock_fields(entry)
            assert ("os_version" in entry) == ("agent_version" in entry) == ("local_ip" in entry) == (now == 100)
            assert all(key in entry for key in METRICS) == (now in with_metrics)
    # The first report failed: the facts were marked sent anyway, as the agent marks them before sending.
    restarted = make_agent(agent, seed=2)
    boot(restarted, {"sensors": []})
    assert {"os_version", "agent_version", "local_ip"} <= set(report_at(restarted, 100.0))


@pytest.mark.parametrize("agent", AGENTS)
def test_the_offline_queue_strips_version_and_flushes_oldest_first_each_on_its_own(agent):
    sim = make_agent(agent, report=10.0, metrics=1000.0)
    boot(sim, {"sensors": served_sensors(2)})
    report_at(sim, 100.0)
    failed = [report_at(sim, now, DOWN) for now in (110.0, 120.0, 130.0, 140.0, 150.0)]
    queued_from = 0 if agent == AGENT_2025_11_22 else 3  # 2025-11-06: once three in a row failed
    assert list(sim.queue) == [sim.queued_form(entry) for entry in failed[queued_from:] if entry]
    assert all("version" not in entry and entry["apps"] == {} for entry in sim.queue)

    poll(sim, {"sensors": served_sensors(3)}, version=2, now=155.0)
    done = cycle(sim, 160.0)
    assert [kind for kind, _ in done] == [REPORT] + [QUEUED] * len(failed[queued_from:])
    assert done[0][1]["version"] == 2  # the fresh report first; the queued ones after it, oldest first
    assert [entry for _, entry in done[1:]] == [sim.queued_form(entry) for entry in failed[queued_from:]]
    assert not sim.queue and sim.flushing == 0
    assert sim.next_report_at == 170.0


@pytest.mark.parametrize("agent", AGENTS)
def test_a_refused_queued_report_stays_queued_blocks_the_rest_and_is_re_sent_after_the_next_success(agent):
    sim = make_agent(agent, report=10.0, metrics=1000.0)
    boot(sim, {"sensors": served_sensors(1)})
    for now in (100.0, 110.0, 120.0, 130.0, 140.0, 150.0):
        report_at(sim, now, DOWN)
    queued = list(sim.queue)
    assert len(queued) >= 2

    done = cycle(sim, 160.0, verdict("applied"), refused(400))
    assert [kind for kind, _ in done] == [REPORT, QUEUED]
    assert list(sim.queue) == queued  # refused: nothing dropped, the rest not tried
    assert sim.report_errors == 0  # the report itself succeeded: no backoff
    assert sim.next_report_at == 170.0

    done = cycle(sim, 170.0, verdict("unchanged"), verdict("queued"), DOWN)
    assert [entry for _, entry in done[1:]] == queued[:2]
    assert list(sim.queue) == queued[1:]  # the first went; the second failed to send and waits
    done = cycle(sim, 180.0)
    assert [entry for _, entry in done[1:]] == queued[1:]
    assert not sim.queue


@pytest.mark.parametrize("agent", AGENTS)
def test_backoff_on_report_errors_ignores_retry_after_and_is_capped(agent):
    sim = make_agent(agent, report=10.0)
    boot(sim, {"sensors": []})
    now = 100.0
    for n in range(1, 12):
        report_at(sim, now, Response(429, {"retry-after": "1"}, b"{}"))
        delay = sim.next_report_at - now
        expected = min(15 * 2 ** (n - 1), 900)
        assert expected * 0.7 <= delay <= expected * 1.3, (n, delay)
        now = sim.next_report_at
    report_at(sim, now)
    assert sim.next_report_at == now + 10.0


@pytest.mark.parametrize("agent", AGENTS)
def test_failure_rate_one_fails_every_enabled_sensor_both_ways(agent):
    sim = make_agent(agent, 1.0, seed=5)
    sensors = served_sensors(16)
    sensors[2] = {**sensors[2], "enabled": False}
    boot(sim, {"sensors": sensors})
    entry = report_at(sim, 100.0)
    enabled = [s for s in sensors if s["enabled"]]
    assert sim.injected_failures == 15
    reported = {s["name"] for s in entry["config"]["sensors"]}
    not_run = {s["name"] for s in enabled} - reported
    unreachable = reported - not_run - {sensors[2]["name"]}
    assert not_run and unreachable  # both kinds of failure, and the disabled one is reported as configured
    assert sensors[2]["name"] in reported

    errors = {}
    if agent == AGENT_2025_11_22:
        health = entry["endpoints_health"]
        assert set(health) == {s["name"] for s in sensors}
        assert health[sensors[2]["name"]]["status"] == "disabled"
        for name in not_run | unreachable:
            assert (health[name]["status"], health[name]["connected"]) == ("offline", False)
            assert health[name]["communicationQuality"] == "offline"
            errors[name] = health[name]["lastError"]
        assert all(health[name]["lastPoll"] is None for name in not_run)
        assert all(health[name]["lastPoll"] for name in unreachable)
    else:
        statuses = [status for group in entry["protocol_adapters_health"].values() for status in group]
        assert {status["deviceName"] for status in statuses} == {s["name"] for s in enabled}
        assert not any(status["connected"] for status in statuses)
        errors = {status["deviceName"]: status["lastError"] for status in statuses}
    by_name = {s["name"]: s for s in sensors}
    for name, error in errors.items():
        assert error in FAILURE_ERRORS[by_name[name]["protocol"]]


def test_failures_are_reproducible_with_a_seed_and_kept_for_an_unchanged_sensor():
    def states(seed, agent=AGENT_2025_11_22):
        sim = make_agent(agent, 0.5, seed=seed)
        boot(sim, {"sensors": served_sensors(16)})
        return {name: (run.state, run.error) for name, run in {**sim.sensors, **sim.not_run}.items()}

    assert states(11) == states(11)
    assert states(11) != states(12)

    sim = make_agent(AGENT_2025_11_22, 0.5, seed=11)
    sensors = served_sensors(16)
    boot(sim, {"sensors": sensors})
    before = {name: run for name, run in sim.sensors.items()}
    poll(sim, {"sensors": sensors[:-1]}, version=2, now=160.0)  # one removed: the others run on as they were
    assert all(sim.sensors[name] is run for name, run in before.items() if name != sensors[-1]["name"])


# --------------------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------------------


def test_agent_step_counts_outcomes_queued_reports_and_quiet_cycles():
    sim = make_agent(AGENT_2025_11_22, report=10.0)
    stats = FleetStats()
    answers = []

    class Server:
        def send(self, request):
            answer = answers.pop(0)
            if answer == DOWN:
                raise TransportError("connection refused")
            return answer

    clock = [100.0]

    def step(*queued_answers):
        answers.extend(queued_answers)
        clock[0] = sim.next_due()
        agent_step(sim, Server(), stats, clock=lambda: clock[0])

    step(state_answer(1, {"sensors": []}))  # poll
    step(DOWN)  # the first report: no connection, queued
    assert (stats.reports_queued, stats.connection_errors) == (1, {(REPORT, "connection refused"): 1})
    step(verdict("applied"))  # the next report (config and health again: nothing was accepted yet)
    step(verdict("queued"))  # then the queue
    step()  # a quiet cycle: nothing sent
    assert stats.requests == {(POLL, 200): 1, (REPORT, 200): 1, (QUEUED, 200): 1}
    assert stats.outcomes == {"applied": 1, "queued": 1}
    assert stats.reports_skipped == 1
    summary = "\n".join(traffic_summary(stats))
    assert "PATCH /api/v1/device/state (queued)  200" in summary
    assert "queued     1" in summary
    assert "1 failed reports queued without 'version'; 1 queued reports re-sent" in summary
    assert "report cycles with nothing new to send (no report, as the agent does): 1" in summary
    assert "connection refused 1" in summary


def test_summary_explains_refusals_and_the_agents_backoff():
    sim = make_agent()
    stats = FleetStats()

    class Unknown:
        def send(self, request):
            return Response(401, {}, b'{"error": "not_authenticated"}')

    agent_step(sim, Unknown(), stats, clock=lambda: 105.0)
    assert stats.errors == 0  # a 4xx is the server refusing, not failing
    summary = "\n".join(traffic_summary(stats))
    assert "Refused: 1 answers were 4xx" in summary
    assert "ignoring Retry-After" in summary
    assert "(queued)" not in summary  # no queued reports: no row for them
