"""The benchmark's steps that need Django and the database, each run as its own process by ``bench.run``:

- ``seed``: the fleet (templates through the services, clones), a staff user with a DRF token, a random sample
  verified, and every file the load generator reads;
- ``probe``: in-process measurements through Django's test client (the same code paths as over HTTP): SQL
  statements per request for every path and for reports of 1 to 1,000 sensors, time per sensor, and the exact
  SQL of changed reports, captured for the database ceiling (pgbench);
- ``states``: which report variant each device's stored report is, for the next load phase.

Run with ``DJANGO_SETTINGS_MODULE=bench.settings`` and ``DATABASE_URL`` pointing at the benchmark database.
"""

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import django

if TYPE_CHECKING:
    from django.test import Client

    from . import seed

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
STAFF_USERNAME = "bench-staff"
FLEET_FILTER = {"deploymentStatus": "deployed", "protocol": "modbus"}


def _out(args) -> Path:
    return Path(args.out)


def _say(text: str) -> None:
    print(text, flush=True)


def is_transaction_control(sql: str) -> bool:
    return sql.lstrip().upper().startswith(TRANSACTION_CONTROL)


# --------------------------------------------------------------------------------------------------------------
# seed
# --------------------------------------------------------------------------------------------------------------


def step_seed(args) -> int:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.urls import reverse
    from rest_framework.authtoken.models import Token
    from rest_framework.pagination import Cursor

    from sensors.models import DeviceSensor
    from sensorsync_project.api.pagination import FleetCursorPagination

    from . import seed, wrkdata

    out = _out(args)
    rng = random.Random(args.random_seed)
    started = time.perf_counter()
    user = get_user_model().objects.create_superuser(STAFF_USERNAME, email="", password=None)
    token = Token.objects.create(user=user).key

    width = max(5, len(str(args.devices)))

    def fleet_name(index: int) -> str:
        return f"bench-{index + 1:0{width}d}"

    blueprints = seed.templates_create(
        count=min(args.templates, args.devices), sensors=args.sensors, name=fleet_name, user=user
    )
    _say(f"  {len(blueprints)} template devices through the services ({time.perf_counter() - started:.1f} s)")
    last = [time.perf_counter()]

    def progress(done: int) -> None:
        if time.perf_counter() - last[0] >= 10 or done + len(blueprints) >= args.devices:
            last[0] = time.perf_counter()
            _say(f"  cloned {done + len(blueprints):,}/{args.devices:,} devices ({last[0] - started:.0f} s)")

    fleet = seed.templates_as_clones(blueprints) + seed.clones_create(
        blueprints, range(len(blueprints), args.devices), name=fleet_name, progress=progress
    )
    extra = seed.clones_create(
        blueprints,
        range(args.devices, args.devices + args.db_devices),
        name=lambda index: f"bench-db-{index - args.devices + 1:03d}",
    )
    seeded = time.perf_counter() - started
    problems = seed.clones_verify(fleet + extra, sample=args.verify_sample, rng=rng)
    if problems:
        _say("Seeding produced devices that are not consistent:")
        for line in problems[:20]:
            _say(f"  {line}")
        return 1
    _say(
        f"  verified {min(args.verify_sample, len(fleet) + len(extra))} random devices: read model = projection, "
        "events gapless, stored digest = the load generator's report, key authenticates"
    )

    etag = blueprints[0].template.target_state.etag

    def record(clone) -> "wrkdata.DeviceRecord":
        return wrkdata.DeviceRecord(
            clone.uuid, clone.api_key, etag, rng.randint(3600, 30 * 86400), _report_prefixes(clone)
        )

    wrkdata.write_devices(out / "devices.bin", (record(c) for c in fleet))
    wrkdata.write_devices(out / "db_devices.bin", (record(c) for c in extra))
    wrkdata.write_states(out / "states.txt", [0] * len(fleet))
    with open(out / "digests.tsv", "w", encoding="ascii") as digests:
        for clone in fleet:
            digests.write(f"{clone.uuid}\t{clone.digests[0]}\t{clone.digests[1]}\n")
    (out / "staff_token.txt").write_text(token + "\n", encoding="ascii")

    # GET paths: the framework ceiling and one device's sensor list cycle through the fleet; the fleet-wide list
    # starts at its first page and at random positions all over the table (cursor pages, as a client pages).
    uuids = [c.uuid for c in fleet]
    wrkdata.write_paths(out / "paths_ceiling.txt", (reverse("bench-ceiling", kwargs={"uuid": u}) for u in uuids))
    wrkdata.write_paths(
        out / "paths_device_sensors.txt",
        (reverse("device-sensor-list", kwargs={"device_uuid": u}) for u in uuids),
    )
    matching = list(
        DeviceSensor.objects.filter(deployment_status="deployed", protocol="modbus").values_list("id", flat=True)
    )
    positions = rng.sample(matching, min(999, len(matching)))
    for name, extra_query in (("paths_fleet_sensors_20.txt", "&limit=20"), ("paths_fleet_sensors.txt", "")):
        base = reverse("sensor-list") + "?" + "&".join(f"{k}={v}" for k, v in FLEET_FILTER.items()) + extra_query
        paginator = FleetCursorPagination()
        paginator.base_url = base
        # A position is the ordering field's value as text, as DRF makes it; its stubs type it as an int.
        cursors = [Cursor(offset=0, reverse=False, position=str(p)) for p in positions]  # type: ignore[arg-type]
        pages = [base, *(paginator.encode_cursor(cursor) for cursor in cursors)]
        wrkdata.write_paths(out / name, pages)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM sensors_devicesensor")
        rows = cursor.fetchone()[0]
    _write_json(
        out / "seed.json",
        {
            "seconds": round(seeded, 1),
            "devices": args.devices,
            "db_devices": args.db_devices,
            "sensors": args.sensors,
            "templates": len(blueprints),
            "sensor_rows": rows,
            "fleet_filter_matches": len(matching),
            "verified_sample": min(args.verify_sample, len(fleet) + len(extra)),
            "etag": etag,
            "settings": _settings_summary(),
            "paths": {
                "poll": reverse("agent-state", kwargs={"uuid": "00000000-0000-0000-0000-000000000000"}).replace(
                    "00000000-0000-0000-0000-000000000000", "{uuid}"
                ),
                "report": reverse("agent-report"),
            },
        },
    )
    _say(f"  seeded {args.devices:,} + {args.db_devices} devices x {args.sensors} sensors in {seeded:.0f} s")
    return 0


def _settings_summary() -> dict:
    """The settings that move the numbers, as the server will run with them (the environment and .env applied)."""
    import logging

    from django.conf import settings

    database = settings.DATABASES["default"]
    return {
        "ROOT_URLCONF": settings.ROOT_URLCONF,
        "DEBUG": settings.DEBUG,
        "CONN_MAX_AGE": database.get("CONN_MAX_AGE"),
        "CONN_HEALTH_CHECKS": database.get("CONN_HEALTH_CHECKS"),
        "DATABASE_OPTIONS": database.get("OPTIONS", {}),
        "SENSORSYNC_AGENT_RATE_LIMIT": settings.SENSORSYNC_AGENT_RATE_LIMIT,
        "log_level": logging.getLevelName(logging.getLogger().level),
    }


# --------------------------------------------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------------------------------------------


class _Agent:
    """One device spoken for in-process through Django's test client, exactly as the load generator does."""

    def __init__(self, client, *, uuid: str, key: str, prefixes: tuple[bytes, bytes], etag: str, variant: int = 0):
        from django.urls import reverse

        self.client = client
        self.uuid = uuid
        self.key = key
        self.prefixes = prefixes
        self.etag = etag
        self.variant = variant
        self.uptime = 7200
        self.poll_path = reverse("agent-state", kwargs={"uuid": uuid})
        self.report_path = reverse("agent-report")

    def report(self, *, change: bool, expect: str):
        from . import reports

        if change:
            self.variant = 1 - self.variant
        self.uptime += 1
        body = reports.report_body(self.prefixes[self.variant], uptime=self.uptime)
        response = self.client.generic(
            "PATCH",
            self.report_path,
            data=body,
            content_type="application/json",
            headers={"X-Device-API-Key": self.key, "Content-Encoding": "gzip"},
        )
        outcome = response.json()[self.uuid]["outcome"] if response.status_code == 200 else None
        if outcome != expect:
            raise RuntimeError(f"report for {self.uuid}: expected {expect}, got {response.status_code} {outcome}")
        return response

    def poll(self, *, etag: str | None, expect: int):
        headers = {"X-Device-API-Key": self.key}
        if etag:
            headers["If-None-Match"] = etag
        response = self.client.get(self.poll_path, headers=headers)
        if response.status_code != expect:
            raise RuntimeError(f"poll of {self.uuid}: expected {expect}, got {response.status_code}")
        return response


def _captured_statements(call) -> list[dict]:
    """Every statement ``call`` ran, in order, with its parameters as SQL literals (``bench.pgbench``): BEGIN and
    COMMIT from Django's query log (they do not pass through a cursor), the rest from ``execute_wrapper``. A UUID
    parameter of an INSERT is written ``gen_random_uuid()``: a replayed event needs an id of its own."""
    import uuid

    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext
    from psycopg import sql as psycopg_sql

    executed: list[tuple[str, Sequence[Any] | None]] = []

    def record(execute, sql, params, many, context):
        executed.append((sql, params))
        return execute(sql, params, many, context)

    reset_queries()  # Django's query log keeps 9,000 entries; a full one would capture nothing
    with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(record):
        call()
    logged = [q for q in ctx.captured_queries if q["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")]
    if len(logged) != len(executed):
        raise RuntimeError(f"captured {len(executed)} statements but Django logged {len(logged)}")
    pending = iter(executed)
    statements: list[dict[str, Any]] = []
    for query in ctx.captured_queries:
        if query["sql"] in ("BEGIN", "COMMIT", "ROLLBACK"):
            statements.append({"sql": query["sql"], "params": None})
            continue
        sql, params = next(pending)
        if params is None:
            statements.append({"sql": sql, "params": None})
            continue
        insert = sql.lstrip().upper().startswith("INSERT")
        statements.append(
            {
                "sql": sql,
                "params": [
                    "gen_random_uuid()"
                    if insert and isinstance(value, uuid.UUID)
                    else psycopg_sql.Literal(value).as_string(connection.connection)
                    for value in params
                ],
            }
        )
    return statements


def _report_prefixes(clone: "seed.Clone") -> tuple[bytes, bytes]:
    """The gzip members that start a clone's two report variants (``bench.reports``), as the load generator sends."""
    from . import reports

    first, second = (reports.gzip_member(reports.body_prefix_json(clone.uuid, entry)) for entry in clone.entries)
    return first, second


def _captured(call) -> list[str]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    reset_queries()  # Django's query log keeps 9,000 entries; a full one would capture nothing
    with CaptureQueriesContext(connection) as ctx:
        call()
    return [q["sql"] for q in ctx.captured_queries]


def _count(statements: list[str]) -> dict:
    control = sum(1 for s in statements if is_transaction_control(s))
    return {"total": len(statements), "transaction_control": control, "data": len(statements) - control}


def _summary(sql: list[str], width: int = 150) -> list[str]:
    return [" ".join(s.split())[:width] for s in sql]


def step_probe(args) -> int:
    from django.contrib.auth import get_user_model
    from django.test import Client

    out = _out(args)
    seed_info = _read_json(out / "seed.json")
    token = (out / "staff_token.txt").read_text(encoding="ascii").strip()
    client = Client(HTTP_HOST="127.0.0.1")
    user = get_user_model().objects.get(username=STAFF_USERNAME)
    sizes = sorted({1, 20, 200, 1000, args.sensors})
    result: dict = {"statements": {}, "sql": {}, "timing": {}, "sizes": sizes}

    agents = _probe_agents(client, user, sizes, etag=seed_info["etag"])
    _report_statements(agents, args.sensors, result)
    agent = agents[args.sensors]
    etag = _poll_statements(agent, result)
    staff = {"Authorization": f"Token {token}"}
    paths_by_key = _staff_statements(client, out, staff, result)
    result["in_process"] = _in_process_times(client, agent, etag, staff, paths_by_key)
    result["timing"] = _time_per_sensor(agents, args.timing_rounds)
    capture = _database_ceiling_capture(client, out)
    _write_json(out / "db_capture.json", {"devices": capture})
    _write_json(out / "probe.json", result)
    _say(f"  probed reports of {', '.join(map(str, sizes))} sensors; captured {len(capture) * 2} changed reports' SQL")
    return 0


def _probe_agents(client: "Client", user, sizes: list[int], *, etag: str) -> dict[int, _Agent]:
    """One template device of each size, made through the services, and its agent."""
    from . import seed

    agents: dict[int, _Agent] = {}
    for n in sizes:
        blueprint = seed.templates_create(count=1, sensors=n, name=_named(f"bench-probe-{n}"), user=user)[0]
        clone = seed.templates_as_clones([blueprint])[0]
        agents[n] = _Agent(client, uuid=clone.uuid, key=clone.api_key, prefixes=_report_prefixes(clone), etag=etag)
    return agents


def _named(name: str) -> Callable[[int], str]:
    return lambda _index: name


def _report_statements(agents: dict[int, _Agent], sensors: int, result: dict) -> None:
    """Statements per report, by size: unchanged (the common case) and changed (every sensor row rewritten)."""
    unchanged, changed = {}, {}
    for n, agent in agents.items():
        sql_u = [_captured(lambda a=agent: a.report(change=False, expect="unchanged")) for _ in range(3)]
        sql_c = [_captured(lambda a=agent: a.report(change=True, expect="applied")) for _ in range(3)]
        unchanged[n] = [_count(s) for s in sql_u]
        changed[n] = [_count(s) for s in sql_c]
        if n == sensors:
            result["sql"]["report_unchanged"] = _summary(sql_u[-1])
            result["sql"]["report_changed"] = _summary(sql_c[-1])
    result["statements"]["report_unchanged"] = unchanged
    result["statements"]["report_changed"] = changed


def _poll_statements(agent: _Agent, result: dict) -> str:
    """Statements per poll, 304 and 200; the target's ETag."""
    etag = agent.poll(etag=None, expect=200)["ETag"]
    sql_304 = _captured(lambda: agent.poll(etag=etag, expect=304))
    sql_200 = _captured(lambda: agent.poll(etag=None, expect=200))
    result["statements"]["poll_304"] = _count(sql_304)
    result["statements"]["poll_200"] = _count(sql_200)
    result["sql"]["poll_304"] = _summary(sql_304)
    result["sql"]["poll_200"] = _summary(sql_200)
    return etag


def _staff_statements(client: "Client", out: Path, staff: dict[str, str], result: dict) -> dict[str, list[str]]:
    """Statements per request of the ceiling and the staff lists, on a first page and one further in; the paths
    of each, as the load generator requests them."""
    paths_by_key = {}
    for key, paths_file in (
        ("ceiling", "paths_ceiling.txt"),
        ("device_sensors", "paths_device_sensors.txt"),
        ("fleet_sensors_20", "paths_fleet_sensors_20.txt"),
        ("fleet_sensors", "paths_fleet_sensors.txt"),
    ):
        paths = (out / paths_file).read_text(encoding="ascii").split()
        paths_by_key[key] = paths
        for path in (paths[0], paths[len(paths) // 2]):  # a first page and one further in
            client.get(path, headers=staff)  # warm: the first request of a kind imports and caches

            def get(path=path):
                response = client.get(path, headers=staff)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path}: {response.status_code} {response.content[:300]!r}")

            sql = _captured(get)
            counts = result["statements"].setdefault(key, [])
            counts.append(_count(sql))
            result["sql"].setdefault(key, _summary(sql))
    return paths_by_key


def _in_process_times(
    client: "Client", agent: _Agent, etag: str, staff: dict[str, str], paths_by_key: dict[str, list[str]]
) -> dict:
    """In-process time per request of each path (no HTTP server, no TCP): what the app itself costs."""

    def timed(call, count: int) -> dict:
        call()
        samples = []
        for _ in range(count):
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(samples), "mean_s": statistics.fmean(samples), "n": count}

    def cycling(key: str):
        paths = iter(paths_by_key[key] * 10)
        return lambda: client.get(next(paths), headers=staff)

    in_process = {}
    in_process["poll304"] = timed(lambda: agent.poll(etag=etag, expect=304), 300)
    in_process["poll200"] = timed(lambda: agent.poll(etag=None, expect=200), 300)
    in_process["unchanged"] = timed(lambda: agent.report(change=False, expect="unchanged"), 300)
    in_process["changed"] = timed(lambda: agent.report(change=True, expect="applied"), 100)
    for key in ("ceiling", "device_sensors", "fleet_sensors_20", "fleet_sensors"):
        in_process[key] = timed(cycling(key), 100)
    return in_process


def _time_per_sensor(agents: dict[int, _Agent], rounds: int) -> dict:
    """Changed and unchanged reports through the whole request path, by size, in rounds that visit every size, so
    that a busy moment of the machine weighs on all sizes alike."""
    samples: dict[int, dict[str, list[float]]] = {n: {"changed": [], "unchanged": []} for n in agents}
    for agent in agents.values():
        agent.report(change=True, expect="applied")  # warm
    for _ in range(rounds):
        for n, agent in agents.items():
            for _ in range(max(1, round(320 / max(n, 20)))):
                for kind, change, expect in (("changed", True, "applied"), ("unchanged", False, "unchanged")):
                    t0 = time.perf_counter()
                    agent.report(change=change, expect=expect)
                    samples[n][kind].append(time.perf_counter() - t0)
    return {
        n: {
            kind: {"median_s": statistics.median(values), "mean_s": statistics.fmean(values), "n": len(values)}
            for kind, values in kinds.items()
        }
        for n, kinds in samples.items()
    }


def _database_ceiling_capture(client: "Client", out: Path) -> list[list[list[dict]]]:
    """The database ceiling's SQL: each device of the ceiling pool reports variant 1, then variant 0 again."""
    from . import wrkdata

    capture = []
    for record in wrkdata.read_devices(out / "db_devices.bin"):
        pool_agent = _Agent(client, uuid=record.uuid, key=record.api_key, prefixes=record.prefixes, etag=record.etag)
        there = _captured_statements(lambda a=pool_agent: a.report(change=True, expect="applied"))
        back = _captured_statements(lambda a=pool_agent: a.report(change=True, expect="applied"))
        capture.append([there, back])
    return capture


# --------------------------------------------------------------------------------------------------------------
# states
# --------------------------------------------------------------------------------------------------------------


def liveness_set(how: str) -> int:
    """Set when every device was last seen, before a load phase.

    Liveness writes are coalesced (at most one per device per ``SENSORSYNC_LIVENESS_WRITE_SECONDS``), so what a
    poll or an unchanged report costs depends on when its device was last seen. ``recent``: all just now, so an
    isolated phase measures the common case (no liveness write due). ``spread``: evenly over the last interval,
    as in a fleet in steady state, so the fleet mix pays liveness writes at the fleet's real rate.
    """
    from django.conf import settings
    from django.db import connection

    from devices.models import Device

    interval = getattr(settings, "SENSORSYNC_LIVENESS_WRITE_SECONDS", 30)
    column = connection.ops.quote_name(Device._meta.get_field("last_seen_at").column)
    table = connection.ops.quote_name(Device._meta.db_table)
    offset = "0" if how == "recent" else f"random() * {float(interval)}"
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = now() - make_interval(secs => {offset})")
        return cursor.rowcount


def step_states(args) -> int:
    from devices.models import DeviceCurrentState

    from . import wrkdata

    out = _out(args)
    if args.liveness != "keep":
        liveness_set(args.liveness)
    fleet = [line.split("\t") for line in (out / "digests.tsv").read_text(encoding="ascii").splitlines()]
    stored = {str(u): d for u, d in DeviceCurrentState.objects.values_list("device__uuid", "digest")}
    variants, unknown = [], 0
    for uuid, digest_a, digest_b in fleet:
        digest = stored.get(uuid)
        if digest == digest_b:
            variants.append(1)
        else:
            unknown += digest != digest_a
            variants.append(0)
    wrkdata.write_states(out / "states.txt", variants)
    if unknown:
        _say(f"  {unknown} devices' stored report is neither benchmark variant (their next report will be applied)")
    return 0


# --------------------------------------------------------------------------------------------------------------
# the real agent's fleet (bench.fleet)
# --------------------------------------------------------------------------------------------------------------


def _base_sensors(sensors: list[dict]) -> list[dict]:
    """A target's sensors without the benchmark's variant mark (``bench.fleet.variant_sensors``)."""
    base = []
    for sensor in sensors:
        metadata = {k: v for k, v in sensor.get("metadata", {}).items() if k != "benchVariant"}
        base.append({**sensor, "metadata": metadata})
    return base


def step_fleet(args) -> int:
    """The fleet file (``bench.fleet``) of the seeded fleet: each device's key, generation, template and the two
    config members its reports carry; the tails of each template."""
    from devices.models import DeviceTargetState

    from . import fleet, wrkdata

    out = _out(args)
    started = time.perf_counter()
    records = list(wrkdata.read_devices(out / "devices.bin"))
    targets = dict(
        DeviceTargetState.objects.filter(device__uuid__in=[r.uuid for r in records[: args.templates]]).values_list(
            "device__uuid", "config"
        )
    )
    templates = [records[t].uuid for t in range(min(args.templates, len(records)))]
    tails = []
    for t, uuid in enumerate(templates):
        names = [s["name"] for s in targets[uuid_from(uuid)]["sensors"]]
        generation = fleet.generation_of(t)
        tails.append((fleet.gzip_member(fleet.tail_plain()), fleet.gzip_member(fleet.tail_metrics(generation, names))))

    def devices():
        batch = 2000
        for start in range(0, len(records), batch):
            group = records[start : start + batch]
            configs = dict(
                DeviceTargetState.objects.filter(device__uuid__in=[r.uuid for r in group]).values_list(
                    "device__uuid", "config"
                )
            )
            for i, record in enumerate(group, start=start):
                base = _base_sensors(configs[uuid_from(record.uuid)]["sensors"])
                members = tuple(fleet.gzip_member(fleet.config_part(fleet.variant_sensors(base, v))) for v in (0, 1))
                template = i % len(templates)
                yield fleet.FleetDevice(
                    record.uuid,
                    record.api_key,
                    fleet.generation_of(template),
                    template,
                    int(record.etag.strip('"')),
                    members,  # type: ignore[arg-type]
                )

    count = fleet.fleet_write(out / "fleet.bin", tails, devices())
    _say(f"  fleet file: {count:,} devices, {len(tails)} templates ({time.perf_counter() - started:.0f} s)")
    _mqtt_credentials_record()
    return step_fleet_states(args)


def _mqtt_credentials_record() -> None:
    """Every device as holding MQTT credentials under its current key, as registration leaves a 2025-11-22 agent
    (the ingestion workers drop a report from a device without them). The broker side is the benchmark's own
    publisher account (``bench.mqttload``), so no broker client is made per device."""
    from django.db import connection

    from devices.models import Device
    from ingest.models import DeviceMqttCredentials

    table = connection.ops.quote_name(DeviceMqttCredentials._meta.db_table)
    devices = connection.ops.quote_name(Device._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (device_id, key_digest, issued_at) SELECT id, api_key_digest, now() FROM {devices} "
            "ON CONFLICT (device_id) DO UPDATE SET key_digest = EXCLUDED.key_digest"
        )


def uuid_from(text: str):
    import uuid as uuid_lib

    return uuid_lib.UUID(text)


def step_fleet_states(args) -> int:
    """Each fleet device's target version and the sensors variant its stored report runs, before a run."""
    from django.db import connection

    from . import fleet, wrkdata

    out = _out(args)
    uuids = [r.uuid for r in wrkdata.read_devices(out / "devices.bin")]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d.uuid::text, t.version, position('benchVariant' in c.config::text) > 0 "
            "FROM devices_device d JOIN devices_devicetargetstate t ON t.device_id = d.id "
            "JOIN devices_devicecurrentstate c ON c.device_id = d.id"
        )
        found = {uuid: (version, int(variant)) for uuid, version, variant in cursor.fetchall()}
    fleet.states_write(out / "fleet_states.txt", (found[u] for u in uuids))
    return 0


def step_changer(args) -> int:
    """The operators' side of the fleet model: each change of ``--changes`` (``bench.fleet``) written at its time
    after ``--start`` (a ``time.time()``), through the product's own service, as a staff user's PUT would. Each
    change gives the device's target the other sensors variant. Prints how late the changes were."""
    from django.contrib.auth import get_user_model

    from devices.models import DeviceTargetState
    from events.choices import EventSourceChoices
    from events.context import audit_context
    from reconciliation.services.targets import target_state_update

    from . import fleet

    out = _out(args)
    changes = fleet.changes_read(Path(args.changes))
    user = get_user_model().objects.get(username=STAFF_USERNAME)
    configs = dict(
        DeviceTargetState.objects.filter(device__uuid__in=[u for _, u in changes]).values_list("device__uuid", "config")
    )
    late, cpu_started = [], time.process_time()
    for t_ms, uuid in changes:
        wait = args.start + t_ms / 1000 - time.time()
        if wait > 0:
            time.sleep(wait)
        else:
            late.append(-wait)
        sensors = configs[uuid_from(uuid)]["sensors"]
        marked = any("benchVariant" in s.get("metadata", {}) for s in sensors)
        new = fleet.variant_sensors(_base_sensors(sensors), 0 if marked else 1)
        with audit_context(source=EventSourceChoices.COMMAND, actor="command:bench-changer"):
            target = target_state_update(uuid=uuid, user=user, config={"sensors": new})
        configs[uuid_from(uuid)] = target.config
    cpu = time.process_time() - cpu_started
    _write_json(
        out / "changer.json",
        {
            "changes": len(changes),
            "late_over_1s": sum(1 for v in late if v > 1),
            "max_late_s": max(late, default=0.0),
            "cpu_ms_per_change": cpu * 1000 / len(changes) if changes else None,
        },
    )
    return 0


# --------------------------------------------------------------------------------------------------------------


def _write_json(path: Path, data) -> None:
    import orjson

    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def _read_json(path: Path):
    import orjson

    return orjson.loads(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["seed", "probe", "states", "fleet", "fleet-states", "changer"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--sensors", type=int, default=20)
    parser.add_argument("--db-devices", type=int, default=64)
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--verify-sample", type=int, default=50)
    parser.add_argument("--timing-rounds", type=int, default=12)
    parser.add_argument("--liveness", choices=["keep", "recent", "spread"], default="keep", help="states step")
    parser.add_argument("--random-seed", type=int, default=20251126)
    parser.add_argument("--changes", help="changer step: the changes file (bench.fleet)")
    parser.add_argument("--start", type=float, help="changer step: the run's start, as time.time()")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    steps = {
        "seed": step_seed,
        "probe": step_probe,
        "states": step_states,
        "fleet": step_fleet,
        "fleet-states": step_fleet_states,
        "changer": step_changer,
    }
    return steps[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
