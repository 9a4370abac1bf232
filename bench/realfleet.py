"""The real agent's stages of ``make bench`` (``bench.fleet``): the independent ceilings, the per-report costs over
HTTP and MQTT, the capacity search and the ingestion soak. Called by ``bench.run`` with the server it started.

- the bare framework ceiling: ``bench.bare`` under the same gunicorn configuration, one indexed read, no middleware;
- the minimal-SQL database ceiling: ``pgbench.minimal_script`` (one state update, one 20-row upsert, one event);
- per-report app CPU, paced at the same rate side by side: unchanged and metrics-only reports over HTTP, the same
  unchanged reports over MQTT (the ingestion workers' CPU from ``/proc``);
- the MQTT transport ceiling: the broker's own publish-to-deliver rate to a no-op subscriber;
- the capacity search (``bench.capacity``), HTTP only, then MQTT reports with HTTP polls;
- ``make bench-soak``: the ingestion workers' memory over a 10-minute MQTT run.
"""

import argparse
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import capacity, cpu, fleet, mqttload, pgbench

ROOT = Path(__file__).resolve().parent.parent
FLEET_LUA = ROOT / "bench" / "lua" / "fleet.lua"
AGENT_LUA = ROOT / "bench" / "lua" / "agent.lua"
RESULT_MARK = "BENCH_RESULT "
BACKLOG_WAIT_S = 30  # how long the workers may take to catch up after the last publish before the run is cut off


@dataclass
class Stage:
    """What the stages share with ``bench.run``: its options, environment, work directory, server and log."""

    args: argparse.Namespace
    env: dict
    work: Path
    port: int
    app_pid: int | None
    log: Callable[[str], None]
    dsn: dict
    results: dict
    extra: list["Proc"] = field(default_factory=list)

    def prepare(self, *step: str, timeout: int = 1800) -> None:
        command = [sys.executable, "-m", "bench.prepare", *step, "--out", str(self.work)]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env={**self.env, "DJANGO_LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        for line in done.stdout.splitlines():
            self.log(line)
        if done.returncode:
            raise RuntimeError(f"bench.prepare {step[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}")


class Proc:
    """A process the benchmark starts and stops itself, by its own pid."""

    def __init__(self, command: list[str], *, env: dict, log_path: Path, stdout=None) -> None:
        self.log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=stdout if stdout is not None else self.log_file,
            stderr=self.log_file,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log_file.close()


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _result(output: str, what: str) -> dict:
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise RuntimeError(f"{what} printed no result:\n{output[-2000:]}")


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _group_seconds(pids: list[int]) -> float:
    processes = cpu._all()
    return sum(cpu.group_seconds(processes, pid) for pid in pids)


# --------------------------------------------------------------------------------------------------------------
# Independent ceilings
# --------------------------------------------------------------------------------------------------------------


def bare_ceiling(stage: Stage, *, duration: int) -> dict:
    """The bare project (``bench.bare``) under the same gunicorn configuration, on its own port, driven as the
    product's framework ceiling is (``agent.lua`` get mode, the same connections)."""
    args = stage.args
    port = _free_port()
    paths = stage.work / "paths_bare.txt"
    ceiling_paths = (stage.work / "paths_ceiling.txt").read_text().splitlines()
    paths.write_text("\n".join(p.replace("/bench/ceiling/", "/bare/") for p in ceiling_paths) + "\n")
    env = {**stage.env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(args.workers)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    server = Proc(
        [gunicorn, "--config", str(ROOT / "gunicorn.conf.py"), "bench.bare.wsgi:application"],
        env=env,
        log_path=stage.work / "gunicorn-bare.log",
    )
    try:
        _wait_port(port)
        time.sleep(1)
        _wrk_get(port, paths, duration=3, connections=args.connections)  # warm-up
        before = cpu.snapshot(server.pid)
        run = _wrk_get(port, paths, duration=duration, connections=args.connections)
        run["cpu_ms_per_request"] = cpu.per_request_ms(before, cpu.snapshot(server.pid), run["requests"])
    finally:
        server.stop()
    run["rps"] = run["requests"] / (run["duration_us"] / 1e6)
    stage.log(
        f"    {'bare ceiling':<22} {run['rps']:>8,.0f} req/s  p99 {run['latency_us']['p99'] / 1000:6.1f} ms  "
        f"status {run['status']}  app cpu ms/req {run['cpu_ms_per_request']['app']:.2f}"
    )
    return run


def _wrk_get(port: int, paths: Path, *, duration: int, connections: int) -> dict:
    command = [
        "wrk",
        "--threads=1",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=10s",
        f"--script={AGENT_LUA}",
        f"http://127.0.0.1:{port}",
        "--",
        "mode=get",
        "threads=1",
        f"paths={paths}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    return _result(done.stdout + done.stderr, "wrk (bare ceiling)")


def minimal_sql_ceiling(stage: Stage, *, duration: int) -> dict:
    """Changed reports per second of the least SQL a changed report needs (``pgbench.minimal_script``)."""
    import psycopg

    dsn = stage.dsn
    with psycopg.connect(host=dsn["host"], port=dsn["port"], user=dsn["user"], dbname=dsn["dbname"]) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'sensors_devicesensor' "
                "AND column_name <> 'id' ORDER BY ordinal_position"
            )
        ]
        row = conn.execute(
            "SELECT min(id), max(id), count(*) FROM devices_device WHERE name LIKE 'bench-db-%'"
        ).fetchone()
    first, last, count = row if row else (None, None, 0)
    if not count or last - first + 1 != count:
        raise RuntimeError(f"the database-ceiling devices are not one range of ids ({first}..{last}, {count})")
    script = pgbench.minimal_script(
        state="devices_devicecurrentstate",
        sensors="sensors_devicesensor",
        events="events_event",
        sensor_columns=columns,
        sensor_count=stage.args.sensors,
    )
    path = stage.work / "pgbench" / "minimal.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    clients = stage.args.workers
    before = cpu.snapshot(None)
    result = pgbench.run(
        [path],
        dsn=dsn,
        clients=clients,
        threads=min(2, clients),
        duration=duration,
        timeout=duration + 120,
        defines={"first_device": str(first), "last_device": str(last)},
    )
    run: dict = {
        "tps": result.tps,
        "transactions": result.transactions,
        "ok": result.ok,
        "latency_ms": result.latency_ms,
    }
    if result.ok and result.transactions:
        time.sleep(0.5)
        run["cpu_ms_per_report"] = cpu.per_request_ms(before, cpu.snapshot(None), result.transactions)
        stage.log(
            f"    {'minimal-SQL ceiling':<22} {result.tps:>8,.0f} changed reports/s ({result.latency_ms:.1f} ms each, "
            f"{result.transactions} runs)  db cpu ms/report {run['cpu_ms_per_report']['db']:.2f}"
        )
    else:
        stage.log("    minimal-SQL ceiling: pgbench failed:")
        for line in result.output.strip().splitlines()[-6:]:
            stage.log(f"      {line}")
    return run


# --------------------------------------------------------------------------------------------------------------
# The fleet model over HTTP (and the polls of the MQTT fleet)
# --------------------------------------------------------------------------------------------------------------


def schedule_for(stage: Stage, devices: int, duration: int, *, only: str | None = None, rate: float | None = None):
    """The schedule of ``devices`` agents (``bench.fleet``), written for wrk and the publisher. ``only``: one kind
    of report alone, ``rate`` of them a second, taken in the fleet's order (the per-report cost runs)."""
    if only:
        per_device_s = fleet.METRICS_S if only == fleet.METRICS else fleet.REPORT_S
        wanted = int((rate or 1) * duration)
        window = max(duration, math.ceil(wanted * per_device_s / devices) + per_device_s)
        full = fleet.schedule_build(devices, window, seed=devices + window, change_share=0)
        picked = [e for e in full.events if e.kind == only][:wanted]
        step = 1000 / (rate or 1)
        events = [fleet.Event(int(i * step), e.device, e.kind) for i, e in enumerate(picked)]
        schedule = fleet.Schedule(devices, duration, events, [], {only: len(events)})
    else:
        schedule = fleet.schedule_build(devices, duration, seed=devices + duration)
    fleet.schedule_write(stage.work / "schedule.txt", schedule)
    fleet.changes_write(stage.work / "changes.tsv", schedule.changes, _uuids(stage))
    return schedule


def _uuids(stage: Stage) -> list[str]:
    cached = stage.work / "fleet_uuids.txt"
    if not cached.exists():
        data = fleet.fleet_read(stage.work / "fleet.bin")
        cached.write_text("".join(f"{d.uuid}\n" for d in data.devices))
    return cached.read_text().splitlines()


@dataclass
class Mqtt:
    """The project's broker and N ingestion workers, started for the MQTT stages."""

    port: int
    username: str
    password: str
    workers: list[Proc]
    metrics_ports: list[int]
    broker: Proc

    def messages(self) -> int:
        total = 0
        for port in self.metrics_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
            except OSError:
                continue
            for match in re.finditer(r'^sensorsync_mqtt_messages_total\{outcome="[a-z]+"\} ([0-9.e+]+)$', text, re.M):
                total += int(float(match.group(1)))
        return total

    def outcomes(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for port in self.metrics_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
            except OSError:
                continue
            for match in re.finditer(r'^sensorsync_mqtt_messages_total\{outcome="([a-z]+)"\} ([0-9.e+]+)$', text, re.M):
                found[match.group(1)] = found.get(match.group(1), 0) + int(float(match.group(2)))
        return found

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.broker.stop()


def mqtt_start(stage: Stage, workers: int) -> Mqtt:
    port = _free_port()
    admin = ("sensorsync-admin", secrets.token_urlsafe(18))
    env = {
        **stage.env,
        "SENSORSYNC_MQTT_BROKER_URL": f"mqtt://127.0.0.1:{port}",
        "SENSORSYNC_MQTT_ADMIN_USERNAME": admin[0],
        "SENSORSYNC_MQTT_ADMIN_PASSWORD": admin[1],
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    data_dir = stage.work / "mosquitto"
    broker = Proc(
        [sys.executable, "manage.py", "mqtt_broker", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        log_path=stage.work / "mqtt_broker.log",
    )
    _wait_port(port)
    time.sleep(0.5)
    username, password = "bench-publisher", secrets.token_urlsafe(18)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    mqttload.publisher_account(f"mqtt://127.0.0.1:{port}", admin=admin, username=username, password=password)
    procs, ports = [], []
    for n in range(1, workers + 1):
        metrics_port = _free_port()
        procs.append(
            Proc(
                [
                    sys.executable,
                    "manage.py",
                    "mqtt_ingest",
                    "--worker",
                    str(n),
                    "--metrics-port",
                    str(metrics_port),
                    "--journal-dir",
                    str(stage.work / "mqtt-journal"),
                    "--converge-interval",
                    "0",
                ],
                env=env,
                log_path=stage.work / f"mqtt_ingest_{n}.log",
            )
        )
        ports.append(metrics_port)
    for metrics_port in ports:
        _wait_port(metrics_port)
    time.sleep(1)
    return Mqtt(port, username, password, procs, ports, broker)


def fleet_run(
    stage: Stage,
    devices: int,
    duration: int,
    *,
    label: str,
    mqtt: Mqtt | None = None,
    only: str | None = None,
    rate: float | None = None,
    changer: bool = True,
) -> dict:
    """One paced run of the fleet model: wrk sends the HTTP requests (all of them, or the polls when ``mqtt``),
    the publisher the MQTT reports, the changer the target changes. Figures for ``bench.capacity.verdict``."""
    schedule = schedule_for(stage, devices, duration, only=only, rate=rate)
    stage.prepare("fleet-states")
    start = time.time() + 2.0
    helpers = _helpers_start(stage, start, mqtt=mqtt, changer=changer and bool(schedule.changes))
    mqtt_before = _MqttCounters(mqtt)
    http_events = sum(1 for e in schedule.events if mqtt is None or e.kind not in fleet.REPORT_KINDS)
    wrk_args = [
        "wrk", "--threads=1", f"--connections={stage.args.fleet_connections}", f"--duration={duration + 1}s",
        "--timeout=10s", f"--script={FLEET_LUA}", f"http://127.0.0.1:{stage.port}", "--",
        f"fleet={stage.work / 'fleet.bin'}", f"schedule={stage.work / 'schedule.txt'}",
        f"states={stage.work / 'fleet_states.txt'}", *(["polls_only=1"] if mqtt else []),
    ]  # fmt: skip
    time.sleep(max(0.0, start - time.time()))
    cpu_before = cpu.snapshot(stage.app_pid)
    children_before = os.times()
    run: dict = {"devices": devices, "duration": duration, "offered_rps": len(schedule.events) / duration}
    if http_events:
        done = subprocess.run(wrk_args, capture_output=True, text=True, timeout=duration + 120, check=False)
        run.update(_wrk_figures(_result(done.stdout + done.stderr, "wrk (fleet)"), http_events))
    else:
        run.update({"p99_ms": 0.0, "errors": 0, "planned": 0, "sent": 0, "late": 0})
    published = None
    if "publisher" in helpers:
        out, _ = helpers["publisher"].process.communicate(timeout=duration + 120)
        published = _result(out.decode(), "the MQTT publisher")
    children = os.times()
    if mqtt is not None and published is not None:
        run.update(_mqtt_figures(mqtt, mqtt_before, published))
        run["planned"] += published["sent"]  # the publisher sends every report, late or not
        run["sent"] += published["sent"]
        run["late"] += published["late"]
        run["errors"] += max(0, published["sent"] - published["acked"])
        run["errors"] += run["mqtt"]["outcomes"].get("dropped", 0)  # a report the workers could not apply
    cpu_after = cpu.snapshot(stage.app_pid)
    for helper in helpers.values():
        helper.process.wait(timeout=120)
        helper.stop()
    if "changer" in helpers:
        run["changer"] = json.loads((stage.work / "changer.json").read_text())
    if run.get("requests"):
        run["app_cpu_ms_per_request"] = (cpu_after["app"] - cpu_before["app"]) * 1000 / run["requests"]
    run["db_cpu_s"] = cpu_after["db"] - cpu_before["db"]
    run["machine_cpu_s"] = cpu_after["machine"] - cpu_before["machine"]
    run["generator_cpu_s"] = (children.children_user + children.children_system) - (
        children_before.children_user + children_before.children_system
    )
    run["cpu_s_per_agent_second"] = capacity.cpu_per_agent_second(
        run, app_s=cpu_after["app"] - cpu_before["app"], devices=devices, duration=duration
    )
    figures = capacity.verdict(devices, run)
    run["held"], run["why"] = figures.held, figures.why
    _fleet_log(stage, label, run)
    return run


def _helpers_start(stage: Stage, start: float, *, mqtt: Mqtt | None, changer: bool) -> dict[str, Proc]:
    """The changer (target changes through the product's service) and the MQTT publisher, both on ``start``."""
    helpers = {}
    if changer:
        helpers["changer"] = Proc(
            [sys.executable, "-m", "bench.prepare", "changer", "--out", str(stage.work), "--changes",
             str(stage.work / "changes.tsv"), "--start", str(start)],
            env={**stage.env, "DJANGO_LOG_LEVEL": "WARNING"},
            log_path=stage.work / "changer.log",
        )  # fmt: skip
    if mqtt is not None:
        helpers["publisher"] = Proc(
            [sys.executable, "-m", "bench.mqttload", "publish", "--port", str(mqtt.port), "--username", mqtt.username,
             "--password", mqtt.password, "--fleet", str(stage.work / "fleet.bin"), "--states",
             str(stage.work / "fleet_states.txt"), "--schedule", str(stage.work / "schedule.txt"), "--start",
             str(start)],
            env=stage.env,
            log_path=stage.work / "publisher.log",
            stdout=subprocess.PIPE,
        )  # fmt: skip
    return helpers


def _wrk_figures(wrk: dict, planned: int) -> dict:
    lat = wrk["latency_us"]
    statuses = wrk.get("status", {})
    errors = sum(wrk["errors"].get(k, 0) for k in ("connect", "read", "write", "timeout"))
    errors += sum(n for code, n in statuses.items() if int(code) >= 400)
    return {
        "requests": wrk["requests"],
        "rps": wrk["requests"] / (wrk["duration_us"] / 1e6),
        "p50_ms": lat["p50"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "errors": errors,
        "planned": wrk.get("planned") or planned,
        "sent": sum(v for k, v in wrk.get("sent", {}).items() if k != "extra"),
        "late": (wrk.get("lag_ms") or {}).get("over250", 0),
        "status": statuses,
        "outcome": wrk.get("outcome"),
        "sent_kinds": wrk.get("sent"),
        "errors_sample": wrk.get("errors_sample"),
    }


class _MqttCounters:
    """The ingestion workers' counters and CPU, and the broker's CPU, when a run starts."""

    def __init__(self, mqtt: Mqtt | None) -> None:
        self.outcomes = mqtt.outcomes() if mqtt else {}
        self.messages = sum(self.outcomes.values())
        self.ingest_s = _group_seconds([w.pid for w in mqtt.workers]) if mqtt else 0.0
        self.broker_s = _group_seconds([mqtt.broker.pid]) if mqtt else 0.0


def _mqtt_figures(mqtt: Mqtt, before: _MqttCounters, published: dict) -> dict:
    """What the ingestion workers applied of what was published, how long after the last publish they caught up
    (the backlog), and their CPU and memory."""
    finished = time.monotonic()
    expected = before.messages + published["sent"]
    while (processed := mqtt.messages()) < expected and time.monotonic() - finished < BACKLOG_WAIT_S:
        time.sleep(0.1)
    backlog_s = time.monotonic() - finished
    processed -= before.messages
    outcomes = {k: v - before.outcomes.get(k, 0) for k, v in mqtt.outcomes().items() if v > before.outcomes.get(k, 0)}
    ingest_s = _group_seconds([w.pid for w in mqtt.workers]) - before.ingest_s
    broker_s = _group_seconds([mqtt.broker.pid]) - before.broker_s
    return {
        "mqtt": {
            **published,
            "processed": processed,
            "outcomes": outcomes,
            "ingest_cpu_s": ingest_s,
            "broker_cpu_s": broker_s,
            "ingest_cpu_ms_per_message": ingest_s * 1000 / max(1, processed),
            "broker_cpu_ms_per_message": broker_s * 1000 / max(1, processed),
            "worker_rss_mb": [_rss_mb(w.pid) for w in mqtt.workers],
        },
        "backlog_s": backlog_s,
    }


def _fleet_log(stage: Stage, label: str, run: dict) -> None:
    mqtt = run.get("mqtt")
    outcomes = run.get("outcome") or (mqtt or {}).get("outcomes")
    stage.log(
        f"    {label:<22} {run['devices']:>7,} agents  {run['offered_rps']:>7,.0f} req/s planned  "
        f"p50 {run.get('p50_ms', 0):5.1f} ms  p99 {run['p99_ms']:6.1f} ms  errors {run['errors']}  "
        f"late {run['late']}  status {run.get('status', {})}  outcomes {outcomes}"
        + (
            f"  mqtt {mqtt['sent']} sent, {mqtt['processed']} applied, backlog {run['backlog_s']:.1f} s, "
            f"ingest cpu ms/msg {mqtt['ingest_cpu_ms_per_message']:.2f}"
            if mqtt
            else ""
        )
        + (f"  app cpu ms/req {run['app_cpu_ms_per_request']:.2f}" if "app_cpu_ms_per_request" in run else "")
        + f"  -> {run['why']}"
    )
    for sample in (run.get("errors_sample") or [])[:2]:
        stage.log(f"      e.g. {sample[:200]}")


# --------------------------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------------------------


def per_report_costs(stage: Stage, mqtt: Mqtt | None) -> dict:
    """Unchanged and metrics-only reports over HTTP, and unchanged reports over MQTT, at the same paced rate one
    after the other: app CPU per report, from /proc (gunicorn's workers; the ingestion workers)."""
    args = stage.args
    devices, rate, duration = args.devices, args.cost_rate, args.duration
    costs = {
        "unchanged_http": fleet_run(
            stage, devices, duration, label="unchanged, HTTP", only=fleet.REPORT, rate=rate, changer=False
        ),
        "metrics_http": fleet_run(
            stage, devices, duration, label="metrics-only, HTTP", only=fleet.METRICS, rate=rate, changer=False
        ),
    }
    if mqtt is not None:
        costs["unchanged_mqtt"] = fleet_run(
            stage, devices, duration, label="unchanged, MQTT", only=fleet.REPORT, rate=rate, mqtt=mqtt, changer=False
        )
    return costs


def transport_ceiling(stage: Stage, mqtt: Mqtt, *, messages: int) -> dict:
    """The broker's own publish-to-deliver rate, with Mosquitto's own clients (C, so the client is not the limit):
    ``mosquitto_pub -l`` publishing ``messages`` lines of a report's size at QoS 1 to a no-op topic, and
    ``mosquitto_sub`` on a shared subscription stamping each delivery; the rate is what was delivered between the
    first and the last stamp."""
    common = ["-h", "127.0.0.1", "-p", str(mqtt.port), "-u", mqtt.username, "-P", mqtt.password, "-q", "1"]
    stamps = stage.work / "transport_stamps.txt"
    lines = stage.work / "transport_payload.txt"
    lines.write_bytes((b"x" * max(1, stage.args.mqtt_payload) + b"\n") * messages)
    with open(stamps, "wb") as out:
        sink = subprocess.Popen(
            ["mosquitto_sub", *common, "-t", f"$share/bench/{mqttload.NOOP_TOPIC}/#", "-C", str(messages), "-F", "%U"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(1.0)
        before = _group_seconds([mqtt.broker.pid])
        started = time.monotonic()
        with open(lines, "rb") as payload:
            publisher = subprocess.run(
                ["mosquitto_pub", *common, "-t", f"{mqttload.NOOP_TOPIC}/ceiling", "-l"],
                stdin=payload,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        published_s = time.monotonic() - started
        try:  # what the broker did not deliver within a few seconds of the last publish, it dropped
            sink.wait(timeout=5 + published_s)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()
    broker_s = _group_seconds([mqtt.broker.pid]) - before
    times = [float(line) for line in stamps.read_text().split()]
    if publisher.returncode or len(times) < messages:
        stage.log(f"    mosquitto_pub exited {publisher.returncode}: {(publisher.stderr or '').strip()[-300:]}")
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    run = {
        "messages": messages,
        "delivered": len(times),
        "seconds": seconds,
        "published_s": published_s,
        "rate": len(times) / seconds if seconds else None,
        "publish_rate": messages / published_s if published_s else None,
        "broker_cpu_ms_per_message": broker_s * 1000 / max(1, len(times)),
        "payload_bytes": stage.args.mqtt_payload,
    }
    stage.log(
        f"    {'transport ceiling':<22} {run['rate'] or 0:>8,.0f} msg/s delivered to a no-op subscriber "
        f"({len(times):,} of {messages:,} messages of {stage.args.mqtt_payload} bytes delivered, QoS 1, published at "
        f"{run['publish_rate'] or 0:,.0f}/s{'' if len(times) == messages else '; the rest lost'}); broker cpu "
        f"ms/msg {run['broker_cpu_ms_per_message']:.3f}"
    )
    return run


def capacity_search(stage: Stage, *, mqtt: Mqtt | None, label: str) -> dict:
    args = stage.args

    def measure(devices: int) -> capacity.Verdict:
        run = fleet_run(stage, devices, args.capacity_duration, label=label, mqtt=mqtt)
        return capacity.Verdict(devices, run["held"], run["why"], run)

    start = args.capacity_start_mqtt if mqtt else args.capacity_start
    held, runs = capacity.search(
        measure, start=start, maximum=args.fleet_devices, runs=args.capacity_runs, precision=args.capacity_precision
    )
    limited = held is not None and held >= args.fleet_devices
    stage.log(
        f"    capacity ({label}): {held if held is not None else 'none'} agents held"
        + (" (every seeded device: the search stopped at the fleet's size)" if limited else "")
    )
    return {"held": held, "seeded_limit": limited, "runs": [r.figures for r in runs]}


def soak(stage: Stage, mqtt: Mqtt, *, devices: int, duration: int, every: float = 10.0) -> dict:
    """MQTT ingestion for ``duration`` s at ``devices`` agents' reports, each worker's RSS sampled every ``every``
    s. Flat: the last minute's mean minus the first minute's, per worker."""
    import threading

    samples: dict[int, list[tuple[float, float]]] = {w.pid: [] for w in mqtt.workers}
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.wait(every):
            for pid in samples:
                rss = _rss_mb(pid)
                if rss is not None:
                    samples[pid].append((time.monotonic() - started, rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = fleet_run(stage, devices, duration, label="soak", mqtt=mqtt)
    finally:
        stop.set()
        sampler.join()
    growth = {}
    for pid, points in samples.items():
        first = [rss for t, rss in points if t <= 60]
        last = [rss for t, rss in points if t >= points[-1][0] - 60] if points else []
        if first and last:
            growth[str(pid)] = sum(last) / len(last) - sum(first) / len(first)
    stage.log(
        "    ingestion worker RSS (MB), first minute -> last minute: "
        + ", ".join(
            f"{samples[int(pid)][0][1]:.0f} -> {samples[int(pid)][-1][1]:.0f} ({g:+.1f})" for pid, g in growth.items()
        )
    )
    return {"run": run, "samples": {str(k): v for k, v in samples.items()}, "growth_mb": growth}
