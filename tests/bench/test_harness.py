"""The benchmark harness (``make bench``) without its servers: what it sends, the files wrk reads, the SQL it
replays, the verdict it prints, and the cloner it seeds with. So the suite notices when the product moves away
from what the benchmark assumes."""

import gzip
import re
import uuid
from pathlib import Path

import orjson
import pytest
from django.conf import settings

from bench import pgbench, reports, run, seed, table, wrkdata
from devices.models import Device
from reconciliation.agent_protocol import body_inflate, json_parse, reports_parse
from sensors.validation import sensors_differences
from simulator.agent import sensor_specs

DEVICE = "6a5707a2-d9f3-4582-9bcf-42c4067d00b6"


def _sensors(n: int = 3) -> list[dict]:
    return [{**s, "id": str(uuid.uuid4())} for s in sensor_specs(7, n)]


def _parsed(body: bytes):
    raw = body_inflate(body, "gzip", limit=settings.SENSORSYNC_MAX_REPORT_BYTES)
    return reports_parse(json_parse(raw), device_uuid=uuid.UUID(DEVICE))


# What the load generator sends ---------------------------------------------------------------------------------


def test_a_report_body_is_a_valid_gzip_report_whose_digest_ignores_uptime():
    entry = reports.report_entry(sensors=_sensors(), version=2, variant=0)
    prefix = reports.gzip_member(reports.body_prefix(DEVICE, entry))

    first = _parsed(reports.report_body(prefix, uptime=100))
    later = _parsed(reports.report_body(prefix, uptime=160))

    assert first.digest == later.digest == reports.entry_digest(entry)
    # As the real agent's: no seq or reported_at, so an unchanged report writes nothing it need not.
    assert (first.clocks, first.facts["uptime"], later.clocks, later.facts["uptime"]) == ({}, 100, {}, 160)
    assert [s["name"] for s in first.sensors] == [s["name"] for s in entry["config"]["sensors"]]


def test_the_two_variants_differ_for_the_digest_but_not_for_same():
    sensors = _sensors(4)
    a, b = (reports.report_entry(sensors=sensors, version=2, variant=v) for v in reports.VARIANTS)

    assert reports.entry_digest(a) != reports.entry_digest(b)
    running = b["config"]["sensors"]
    assert all(not sensors_differences(d, r) for d, r in zip(sensors, running, strict=True))  # still "deployed"
    assert all(r["metadata"] != d["metadata"] for d, r in zip(sensors, running, strict=True))  # every row changes


def test_the_stored_gzip_member_is_what_zlib_reads():
    for data in (b"", b"12}}", bytes(range(256)) * 3):
        member = reports.gzip_stored_member(data)
        assert gzip.decompress(member) == data
        assert gzip.decompress(reports.gzip_member(b"abc") + member) == b"abc" + data


def test_the_lua_script_knows_every_mode_the_runner_uses():
    lua = run.LUA.read_text()
    used = set(re.findall(r'"(poll304|poll200|unchanged|changed|get|mix)"', Path(run.__file__).read_text()))
    assert used == {"poll304", "poll200", "unchanged", "changed", "get", "mix"}
    for mode in used:
        assert f'mode == "{mode}"' in lua
    assert 'string.format("%d}}"' in lua  # the tail bench.reports.body_tail builds
    assert '"common.lua"' in lua and "gzip_stored(" in lua  # the helpers both wrk scripts load
    common = run.LUA.with_name("common.lua").read_text()
    assert "\\31\\139\\8\\0\\0\\0\\0\\0\\0\\255" in common  # the header of bench.reports.gzip_stored_member


# Files wrk reads ------------------------------------------------------------------------------------------------


def test_device_state_and_path_files_round_trip(tmp_path):
    records = [
        wrkdata.DeviceRecord(str(uuid.uuid4()), f"key-{n}", '"2"', 3600 + n, (b"\x1f\x8b A\n" * n, b"B\x00" * 7))
        for n in range(5)
    ]
    assert wrkdata.write_devices(tmp_path / "devices.bin", records) == 5
    assert list(wrkdata.read_devices(tmp_path / "devices.bin")) == records

    wrkdata.write_states(tmp_path / "states.txt", [0, 1, 1, 0])
    assert wrkdata.read_states(tmp_path / "states.txt") == [0, 1, 1, 0]

    assert wrkdata.write_paths(tmp_path / "paths.txt", ["/a", "/b?x=1"]) == 2
    with pytest.raises(ValueError):
        wrkdata.write_paths(tmp_path / "paths.txt", ["/a b"])


# The database ceiling's SQL ---------------------------------------------------------------------------------------


_LONG_JSON = "'" + orjson.dumps({"sensors": [{"name": f"s{i}"} for i in range(9)]}).decode() + "'::jsonb"
_CAPTURED_REPORT = [
    {"sql": 'SELECT "id" FROM "devices_device" WHERE "digest" = %s', "params": ["'abc'"]},
    {"sql": "BEGIN", "params": None},
    {"sql": 'UPDATE "devices_devicecurrentstate" SET "config" = %s WHERE "id" = %s', "params": [_LONG_JSON, "7"]},
    {"sql": 'INSERT INTO "events_event" ("event_id", "sequence") VALUES (%s, 100%%)', "params": ["gen_random_uuid()"]},
    {"sql": "COMMIT", "params": None},
]


def test_a_replay_writes_every_parameter_in_and_keeps_the_captured_order():
    script = pgbench.replay_script([_CAPTURED_REPORT, _CAPTURED_REPORT])

    lines = script.text.splitlines()
    assert script.reports == 2
    assert lines[:5] == [
        'SELECT "id" FROM "devices_device" WHERE "digest" = \'abc\';',
        "BEGIN;",
        pgbench.colons_hidden(f'UPDATE "devices_devicecurrentstate" SET "config" = {_LONG_JSON} WHERE "id" = 7') + ";",
        'INSERT INTO "events_event" ("event_id", "sequence") VALUES (gen_random_uuid(), 100%);',
        "COMMIT;",
    ]
    assert lines[5:] == lines[:5]


def test_a_statement_whose_parameters_do_not_match_its_placeholders_is_refused():
    with pytest.raises(ValueError, match="2 parameters for 1 placeholders"):
        pgbench.replay_script([[{"sql": "SELECT %s", "params": ["1", "2"]}]])


@pytest.mark.postgres  # the benchmark runs on PostgreSQL; psycopg renders the parameters
@pytest.mark.django_db(transaction=True)  # the report's own transaction, BEGIN and COMMIT included
def test_captured_changed_reports_carry_every_parameter_of_every_statement(admin_client, client, device):
    """What the probe captures for the replay: a real changed report's statements, parameters rendered by psycopg,
    a new event's uuid drawn again on every replay."""
    from bench.prepare import _captured_statements
    from tests.helpers import add_sensor, report, sensor_payload, target_sensors

    add_sensor(admin_client, device, sensor_payload("a"))

    statements = _captured_statements(lambda: report(client, device, 2, target_sensors(device), seq=1))

    sql = [s["sql"] for s in statements]
    assert "COMMIT" in sql
    for statement in statements:
        if statement["params"] is not None:
            assert len(pgbench._placeholders(statement["sql"])) == len(statement["params"]) + 1
    events = [s for s in statements if s["sql"].startswith('INSERT INTO "events_event"')]
    assert events and "gen_random_uuid()" in events[0]["params"]
    assert pgbench.replay_script([statements]).text.count(";\n") == len(statements)


def test_pgbench_output_is_read_and_failures_are_not_a_ceiling():
    output = (
        "number of transactions actually processed: 1256\nnumber of failed transactions: 0 (0.000%)\n"
        "latency average = 15.9 ms\ntps = 251.5 (without initial connection time)\n"
    )
    ok = pgbench.result_parse(output)
    assert (ok.tps, ok.transactions, ok.failed, ok.latency_ms, ok.ok) == (251.5, 1256, 0, 15.9, True)
    aborted = pgbench.result_parse(output + "client 0 script 3 aborted in command 5 query 0: ERROR: duplicate key\n")
    assert aborted.ok is False


# The printed verdict ---------------------------------------------------------------------------------------------


def _phase(requests: int, *, p50_ms: float = 5, p99_ms: float = 20, status=None, outcome=None, seconds: float = 10):
    return {
        "duration_us": seconds * 1e6,
        "requests": requests,
        "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0},
        "latency_us": {"p50": p50_ms * 1000, "p99": p99_ms * 1000},
        "status": status or {"200": requests},
        "outcome": outcome or {},
    }


def _results() -> dict:
    counts = {str(n): [{"total": 8, "transaction_control": 2, "data": 6}] for n in (1, 20, 200, 1000)}
    unchanged = {str(n): [{"total": 1, "transaction_control": 0, "data": 1}] for n in (1, 20, 200, 1000)}
    timing = {
        str(n): {"changed": {"median_s": 0.004 + n * 0.0002}, "unchanged": {"median_s": 0.002}}
        for n in (1, 20, 200, 1000)
    }
    return {
        "config": {"sensors": 20, "mix_duration": 60},
        "mix_rate": 1167,
        "ceilings": {"poll304": 1000.0, "poll200": 1000.0, "unchanged": 1000.0, "changed": 100.0},
        "framework_ceiling_rps": 1000.0,
        "database_ceiling_reports_per_s": 100.0,
        "memory_mb": {"1": 91.0, "2": 95.5},
        "probe": {
            "sizes": [1, 20, 200, 1000],
            "statements": {
                "poll_304": {"total": 2},
                "poll_200": {"total": 2},
                "report_unchanged": unchanged,
                "report_changed": counts,
                "ceiling": {"total": 1},
                "device_sensors": [{"total": 4}],
                "fleet_sensors_20": [{"total": 2}],
            },
            "timing": timing,
            "in_process": {"poll304": {"median_s": 0.0012}},
        },
        "phases": {
            "ceiling_1": _phase(10_000),
            "poll304": _phase(7_000, status={"304": 7_000}),
            "poll200": _phase(6_000),
            "unchanged": _phase(5_000, outcome={"unchanged": 5_000}),
            "changed": _phase(400, outcome={"applied": 400}),
            "device_sensors": _phase(3_000, p50_ms=10),
            "fleet_sensors_20": _phase(2_000, p50_ms=25),
            "mix": _phase(70_020, p99_ms=120, seconds=60, status={"200": 60_000, "304": 10_020}),
        },
    }


def test_the_table_shows_each_path_against_its_ceiling_and_target():
    rows = {row.path: row for row in table.rows(_results())}

    assert (rows["(a) poll, 304"].ratio, rows["(a) poll, 304"].result) == ("0.70", "PASS")
    assert (table._down(0.5999), table._down(0.29), table._up(1.505), table._up(1.5)) == (
        "0.59",
        "0.29",
        "1.51",
        "1.50",
    )
    assert rows["(a) poll, 304"].app_ms == pytest.approx(1.2)
    assert (rows["(c) report unchanged (20)"].ratio, rows["(c) report unchanged (20)"].result) == ("0.50", "FAIL")
    assert (rows["(d) report changed (20)"].ratio, rows["(d) report changed (20)"].result) == ("0.40", "PASS")
    assert (rows["(e) fleet sensors, 20/page"].ratio, rows["(e) fleet sensors, 20/page"].result) == ("2.50", "PASS")
    assert rows["(f) fleet mix"].result == "PASS"
    assert rows["(f) fleet mix"].sql == f"{(2 + 6 * (0.95 * 1 + 0.05 * 8)) / 7:.1f}"


@pytest.mark.parametrize(("over250", "result"), [(700, "PASS"), (701, "FAIL")])
def test_a_mix_that_fell_behind_its_schedule_misses_the_p99_target(over250, result):
    """Answers timed from when wrk sent them can be fast while requests wait for a free connection: a request that
    started more than 250 ms after its slot took at least that long as the fleet sees it; over 1% of them fail."""
    results = _results()
    results["phases"]["mix"]["lag_ms"] = {"n": 70_000, "over50": 2_000, "over250": over250, "max": 400, "sum": 1e6}

    rows = {row.path: row for row in table.rows(results)}

    assert rows["(f) fleet mix"].result == result
    assert f"{over250 / 70_000:.1%} of requests started > 250 ms after their slot" in "\n".join(
        table.report_lines(results)
    )


def test_the_verdict_lists_checks_and_counts_missed_targets():
    results = _results()
    results["phases"]["changed"]["outcome"] = {"applied": 399, "unchanged": 1}

    text = "\n".join(table.report_lines(results))

    assert "PASS  SQL statements per report constant and <= 8" in text
    assert "PASS  time per sensor flat from 20 to 1,000 sensors" in text
    assert "PASS  worker memory < 200 MB  (peak RSS 96 MB over 2 workers)" in text
    assert "FAIL  changed reports answered 'applied'  (399/400)" in text
    assert re.search(r"\(d\) report changed \(20\).* FAIL", text)  # a wrong outcome fails the path too
    assert text.endswith("7 of 10 targets met, 3 missed")  # (c) at 0.50, (d) and its outcome check
    assert table.missed(results) == 3


def test_options_default_to_the_fleet_at_the_agents_defaults(monkeypatch):
    for name in ("DEVICES", "SENSORS", "DURATION", "MIX_DURATION", "MIX_RATE", "WORKERS", "CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKERS", "3")

    args = run.options([])

    assert (args.devices, args.sensors, args.duration, args.mix_duration) == (10_000, 20, 15, 60)
    assert args.mix_rate == 1167  # 10,000 devices reporting every 10 s and polling every 60 s
    assert (args.workers, args.connections) == (3, 6)
    with pytest.raises(SystemExit):
        run.options(["--pg-host", "db.example.com"])


# Seeding by cloning ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_clones_are_consistent_devices_of_their_own(superuser):
    name = "bench-test-{:02d}".format
    blueprints = seed.templates_create(count=2, sensors=3, name=name, user=superuser)
    fleet = seed.templates_as_clones(blueprints) + seed.clones_create(blueprints, range(2, 6), name=name)

    assert seed.clones_verify(fleet, sample=len(fleet), rng=__import__("random").Random(1)) == []
    devices = Device.objects.filter(name__startswith="bench-test-")
    assert devices.count() == 6
    assert len({d.uuid for d in devices}) == len({d.api_key_digest for d in devices}) == 6
    template, clone = fleet[0], fleet[2]
    sensor_ids = [
        {s["id"] for s in Device.objects.get(uuid=c.uuid).target_state.config["sensors"]} for c in (template, clone)
    ]
    assert not sensor_ids[0] & sensor_ids[1]  # every uuid is the clone's own
    body = orjson.dumps({clone.uuid: orjson.loads(clone.entries[0])})
    assert reports.entry_digest(orjson.loads(body)[clone.uuid]) == clone.digests[0]
    entry = orjson.loads(clone.entries[0])
    assert reports.body_prefix_json(clone.uuid, clone.entries[0]) == reports.body_prefix(clone.uuid, entry)


def test_colons_in_replayed_literals_are_hidden_from_pgbench_variables():
    """pgbench reads ``:name`` as a variable, inside string literals too; the replay spells those colons ``\\x3a``
    in an E'' string, the same value for PostgreSQL, and leaves everything outside literals alone."""
    sql = (
        'UPDATE "t" SET "config" = \'{"enabled":true,"url":"opc.tcp://h:4840"}\'::jsonb, '
        "\"note\" = E'a\\\\:b', \"quote\" = 'it''s: fine', \"plain\" = 'no colon' WHERE \"id\" = 1"
    )

    hidden = pgbench.colons_hidden(sql)

    assert hidden == (
        'UPDATE "t" SET "config" = E\'{"enabled"\\x3atrue,"url"\\x3a"opc.tcp\\x3a//h\\x3a4840"}\'::jsonb, '
        "\"note\" = E'a\\\\\\x3ab', \"quote\" = E'it''s\\x3a fine', \"plain\" = 'no colon' WHERE \"id\" = 1"
    )
    captured = [{"sql": "BEGIN", "params": None}, {"sql": sql, "params": None}, {"sql": "COMMIT", "params": None}]
    script = pgbench.replay_script([captured]).text
    assert ":" not in script.replace("::jsonb", "")
