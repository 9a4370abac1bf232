"""The real agent's fleet model (``bench.fleet``), the capacity search and the real-agent verdict: the pure parts
of ``make bench``, without wrk, a broker or PostgreSQL."""

import gzip
import itertools
import uuid

import orjson
import pytest
from django.conf import settings

from bench import capacity, fleet, mqttload, pgbench, realfleet, realtable, reports
from reconciliation.agent_protocol import body_inflate, json_parse, reports_parse
from simulator.agent import sensor_specs

# The schedule --------------------------------------------------------------------------------------------------


def test_each_agent_polls_and_reports_every_minute_and_sends_metrics_every_five():
    schedule = fleet.schedule_build(1_000, 600, seed=3, change_share=0)

    per_device: dict[int, list[fleet.Event]] = {}
    for event in schedule.events:
        per_device.setdefault(event.device, []).append(event)
    for events in per_device.values():
        kinds = [e.kind for e in events]
        assert kinds.count(fleet.POLL) == 10 and kinds.count(fleet.REPORT) == 10 and kinds.count(fleet.METRICS) == 2
        polls = [e.t_ms for e in events if e.kind == fleet.POLL]
        assert {b - a for a, b in itertools.pairwise(polls)} == {60_000}
    assert len(schedule.events) == pytest.approx(fleet.requests_per_second(1_000) * 600, rel=0.001)
    assert schedule.events == sorted(schedule.events)


def test_the_phases_spread_the_fleet_evenly_over_the_minute():
    schedule = fleet.schedule_build(6_000, 60, seed=5, change_share=0)
    per_second = [0] * 60
    for event in schedule.events:
        per_second[event.t_ms // 1000] += 1

    mean = len(schedule.events) / 60
    assert max(per_second) < 1.25 * mean and min(per_second) > 0.75 * mean


def test_one_percent_change_per_minute_each_fetched_by_a_200_poll_then_one_changed_report():
    schedule = fleet.schedule_build(2_000, 300, seed=7)

    assert len(schedule.changes) == pytest.approx(0.01 * 2_000 * 5, rel=0.1)
    polls_changed = {(e.device, e.t_ms) for e in schedule.events if e.kind == fleet.POLL_CHANGED}
    assert len(polls_changed) == len(schedule.changes)
    for change in schedule.changes:
        assert (change.device, change.t_ms + fleet.CHANGE_LEAD_S * 1000) in polls_changed  # written 10 s ahead
    for device in {d for d, _ in polls_changed}:
        kinds = [e.kind for e in schedule.events if e.device == device and e.kind != fleet.POLL]
        for i, kind in enumerate(kinds):
            if kind == fleet.POLL_CHANGED and i + 1 < len(kinds):
                assert kinds[i + 1] == fleet.CHANGED  # the next report carries the new sensors
    assert schedule.counts[fleet.CHANGED] <= len(schedule.changes)


def test_schedule_and_changes_files_round_trip(tmp_path):
    schedule = fleet.schedule_build(50, 120, seed=1, change_share=0.1)
    fleet.schedule_write(tmp_path / "s.txt", schedule)
    uuids = [str(uuid.uuid4()) for _ in range(50)]
    fleet.changes_write(tmp_path / "c.tsv", schedule.changes, uuids)

    assert fleet.schedule_read(tmp_path / "s.txt") == schedule.events
    assert fleet.changes_read(tmp_path / "c.tsv") == [(c.t_ms, uuids[c.device]) for c in schedule.changes]


# The bodies ---------------------------------------------------------------------------------------------------


DEVICE = "6a5707a2-d9f3-4582-9bcf-42c4067d00b6"


def _device(generation: int, tmp_path) -> tuple[fleet.FleetDevice, list[tuple[bytes, bytes]]]:
    sensors = [{**s, "id": str(uuid.uuid4())} for s in sensor_specs(generation, 3)]
    names = [s["name"] for s in sensors]
    tails = [(fleet.gzip_member(fleet.tail_plain()), fleet.gzip_member(fleet.tail_metrics(generation, names)))]
    configs = tuple(fleet.gzip_member(fleet.config_part(fleet.variant_sensors(sensors, v))) for v in (0, 1))
    device = fleet.FleetDevice(DEVICE, "key", generation, 0, 2, configs)  # type: ignore[arg-type]
    fleet.fleet_write(tmp_path / "fleet.bin", tails, [device])
    read = fleet.fleet_read(tmp_path / "fleet.bin")
    assert read.devices == [device] and read.tails == tails
    return device, tails


def _parsed(body: bytes):
    raw = body_inflate(body, "gzip", limit=settings.SENSORSYNC_MAX_REPORT_BYTES)
    return reports_parse(json_parse(raw), device_uuid=uuid.UUID(DEVICE))


@pytest.mark.parametrize("generation", [0, 1])
def test_plain_and_metrics_reports_keep_the_seeded_digest_and_a_change_moves_it(generation, tmp_path):
    """What the seed stores (``bench.reports.report_entry`` of the generation) is what the fleet's plain and metrics
    reports leave unchanged; the 2025-11-22 agent leaves ``config`` out, the 2025-11-06 agent sends it."""
    device, tails = _device(generation, tmp_path)
    sensors = [s for s in orjson.loads(gzip.decompress(device.configs[0])[len(b',"config":') :])["sensors"]]
    entry = reports.report_entry(sensors=sensors, version=2, variant=0, generation=generation)
    seeded_parts = reports.entry_parts(DEVICE, entry)
    state = fleet.DeviceState(device)

    plain = _parsed(fleet.http_body(state, fleet.REPORT, tails))
    metrics = _parsed(fleet.http_body(state, fleet.METRICS, tails))

    assert ("config" in plain.parts) is (generation == 0)
    assert {**seeded_parts, **plain.parts} == seeded_parts
    assert {**seeded_parts, **metrics.parts} == seeded_parts
    recorded = fleet.metrics_fields(fleet.GENERATIONS[generation])
    assert (
        metrics.facts["facts"]["cpu_usage"] == recorded["cpu_usage"] and metrics.facts["uptime"] == recorded["uptime"]
    )
    assert "cpu_usage" not in plain.facts.get("facts", {})
    assert orjson.loads(state.payload(fleet.METRICS, tails)) == orjson.loads(
        gzip.decompress(fleet.http_body(state, fleet.METRICS, tails))
    )

    state.on_event(fleet.POLL_CHANGED)
    state.on_event(fleet.CHANGED)
    changed = _parsed(fleet.http_body(state, fleet.CHANGED, tails))
    assert changed.version == 3 and changed.parts["config"] != seeded_parts["config"]


def test_the_lua_side_builds_the_same_bodies_and_knows_every_kind():
    lua = realfleet.FLEET_LUA.read_text()
    for kind in fleet.KINDS:
        assert f"{kind} = " in lua
    assert '\'{"%s":{"version":%d,"apps":{},"is_online":true\'' in lua  # fleet.head
    assert fleet.head(DEVICE, 4) == b'{"%s":{"version":4,"apps":{},"is_online":true' % DEVICE.encode()
    assert '"common.lua"' in lua and "gzip_stored(" in lua
    common = realfleet.FLEET_LUA.with_name("common.lua").read_text()
    assert "\\31\\139\\8\\0\\0\\0\\0\\0\\0\\255" in common  # the header of fleet.stored_member
    assert gzip.decompress(fleet.stored_member(b"abc")) == b"abc"


def test_states_file_round_trip(tmp_path):
    fleet.states_write(tmp_path / "s.txt", [(2, 0), (5, 1)])
    assert fleet.states_read(tmp_path / "s.txt") == [(2, 0), (5, 1)]


# The independent database ceiling ---------------------------------------------------------------------------------


def test_the_minimal_sql_is_one_update_one_upsert_one_event_in_one_transaction():
    script = pgbench.minimal_script(
        state="st",
        sensors="se",
        events="ev",
        sensor_columns=["device_id", "name", "metadata", "updated_at"],
        sensor_count=20,
    )
    commands = [line.split()[0] for line in script.splitlines() if not line.startswith(" ")]

    assert script.startswith("\\set device random(:first_device, :last_device)\n")
    assert commands == ["\\set", "\\set", "BEGIN;", "UPDATE", "\\gset", "INSERT", "INSERT", "COMMIT;"]
    assert "RETURNING seq AS event_seq" in script and f":event_seq + {pgbench.SEQUENCE_OFFSET}," in script
    assert "ON CONFLICT (device_id, name) DO UPDATE" in script
    assert "SELECT device_id, name, jsonb_build_object('benchVariant', :variant), now() FROM se" in script


# The capacity search --------------------------------------------------------------------------------------------


def _machine(limit: int):
    def measure(devices: int) -> capacity.Verdict:
        run = {"p99_ms": 50 if devices <= limit else 900, "errors": 0, "planned": 100, "sent": 100, "late": 0}
        return capacity.verdict(devices, run)

    return measure


@pytest.mark.parametrize("limit", [33_000, 52_000, 12_000])
def test_the_search_brackets_the_largest_fleet_that_holds(limit):
    held, runs = capacity.search(_machine(limit), start=40_000, maximum=100_000, runs=12, precision=0.05)

    assert held is not None and held <= limit and held >= limit / 1.05 - 1
    assert all(r.held == (r.devices <= limit) for r in runs)


def test_the_search_stops_at_the_fleet_it_has_and_after_its_runs():
    held, runs = capacity.search(_machine(10**9), start=40_000, maximum=100_000, runs=8)
    assert (held, [r.devices for r in runs]) == (100_000, [40_000, 60_000, 90_000, 100_000])

    held, runs = capacity.search(_machine(30_000), start=40_000, maximum=100_000, runs=2)
    assert (held, len(runs)) == (26_666, 2)


@pytest.mark.parametrize(
    ("run", "why"),
    [
        ({"p99_ms": 251, "errors": 0, "planned": 100, "sent": 100, "late": 0}, "p99 251 ms"),
        ({"p99_ms": 10, "errors": 2, "planned": 100, "sent": 100, "late": 0}, "2 errors"),
        ({"p99_ms": 10, "errors": 0, "planned": 100, "sent": 98, "late": 0}, "sent 98.0% of planned"),
        ({"p99_ms": 10, "errors": 0, "planned": 100, "sent": 100, "late": 2}, "2.0% sent > 250 ms late"),
        ({"p99_ms": 10, "errors": 0, "planned": 100, "sent": 100, "late": 0, "backlog_s": 3.0}, "ingestion 3.0 s"),
    ],
)
def test_a_fleet_that_is_slow_fails_or_falls_behind_does_not_hold(run, why):
    verdict = capacity.verdict(1_000, run)
    assert not verdict.held and why in verdict.why


# The verdict ----------------------------------------------------------------------------------------------------


def _real_results() -> dict:
    def phase(requests: int) -> dict:
        return {"duration_us": 10e6, "requests": requests}

    return {
        "phases": {"poll304": phase(27_000), "unchanged": phase(18_000), "changed": phase(6_000)},
        "database_ceiling_reports_per_s": 500.0,
        "real": {
            "bare": [{"rps": 2_900.0}, {"rps": 3_100.0}],
            "product_ceiling": phase(18_300),
            "minimal_sql": [{"tps": 1_400.0, "ok": True}, {"tps": 1_000.0, "ok": True}],
            "costs": {
                "unchanged_http": {"app_cpu_ms_per_request": 1.0},
                "metrics_http": {"app_cpu_ms_per_request": 1.3},
                "unchanged_mqtt": {"mqtt": {"ingest_cpu_ms_per_message": 0.2}},
            },
            "transport": {"rate": 20_000.0, "broker_cpu_ms_per_message": 0.02},
            "capacity_http": {
                "held": 33_000,
                "runs": [
                    {"devices": 40_000, "held": False, "why": "p99 900 ms"},
                    {"devices": 33_000, "held": True, "why": "held"},
                ],
            },
            "soak": {"growth_mb": {"11": 1.2, "12": 0.4}},
        },
    }


def test_the_real_agent_rows_hold_each_path_against_the_independent_ceilings():
    rows = {row[0]: row for row in realtable.verdicts(_real_results())}

    assert rows["framework ceiling, product"][2] == "0.61 x bare"
    assert rows["(c) report unchanged"][2:] == ("0.60 x bare", ">= 0.60", "PASS")
    assert rows["(a) poll, 304"][2:] == ("0.90 x bare", "-", "-")
    assert rows["(d) report changed"][2:] == ("0.50 x minimal", ">= 0.35", "PASS")
    assert rows["database ceiling, replay"][2] == "0.42 x minimal"
    assert rows["metrics-only report, HTTP: app CPU"][2:] == ("1.30 x unchanged", "<= 1.2", "FAIL")
    assert rows["unchanged report, MQTT: ingest CPU"][2:] == ("0.20 x HTTP", "<= 0.25", "PASS")
    assert rows["capacity (a) HTTP only"][1:] == ("33,000 agents", "at 40,000: p99 900 ms", ">= 40,000", "FAIL")
    assert rows["ingest worker RSS, soak"][1] == "+1.2 MB" and rows["ingest worker RSS, soak"][4] == "PASS"
    assert realtable.missed(_real_results()) == 2
    text = "\n".join(realtable.lines(_real_results()))
    assert "Capacity search (a) HTTP only:" in text and " 40,000 " in text


def test_the_benchmark_account_may_publish_reports_and_use_the_noop_topics_only():
    acls = {(a["acltype"], a["topic"]) for a in mqttload.publisher_acls()}
    assert acls == {
        ("publishClientSend", "iot/device/+/state"),
        ("publishClientSend", "bench/noop/#"),
        ("subscribePattern", "$share/bench/bench/noop/#"),
        ("publishClientReceive", "bench/noop/#"),
    }


def test_the_cpu_bound_estimate_counts_the_server_side_and_scales_a_run_that_fell_behind():
    run = {"db_cpu_s": 6.0, "planned": 1_000, "sent": 500, "mqtt": {"ingest_cpu_s": 3.0, "broker_cpu_s": 1.0}}

    per_agent = capacity.cpu_per_agent_second(run, app_s=10.0, devices=10_000, duration=60)

    assert per_agent == pytest.approx(20.0 / (10_000 * 60 * 0.5))
    assert capacity.cpu_bound_agents(per_agent, cores=2, busy=0.8) == 24_000
    assert capacity.cpu_per_agent_second({"planned": 10, "sent": 0}, app_s=1.0, devices=1, duration=1) is None
