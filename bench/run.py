"""``make bench``: the product under its production server against PostgreSQL, measured against its ceilings.

One run, on one machine, loopback only:

1. a fresh PostgreSQL database (dropped and recreated), migrated, seeded (``bench.prepare seed``), vacuumed;
2. in-process measurements (``bench.prepare probe``): SQL statements per request, time per sensor, and the
   exact SQL of changed reports;
3. the database ceiling: that SQL replayed by pgbench, the app server not running;
4. gunicorn (``gunicorn.conf.py``, sync workers) with ``bench.settings``: the product's settings plus the
   framework-ceiling view, so the product and its ceiling share server, middleware and settings;
5. wrk, a separate process, speaking the agent protocol (``bench/lua/agent.lua``): the framework ceiling, each
   path, the ceiling again, then the fleet mix paced at the fleet's rate while worker memory is sampled;
6. the table (``bench.table``), written with every raw figure to ``var/bench/results/``.

Everything started here is stopped here, also on Ctrl-C or a failure.
"""

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from . import capacity, cpu, pgbench, realfleet, table

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "lua" / "agent.lua"
RESULT_MARK = "BENCH_RESULT "


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def options(argv: list[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="SensorSync's benchmark (README: Benchmark). Every option also reads the environment variable "
        "in capitals (DEVICES=500 make bench).",
    )
    parser.add_argument("--devices", type=int, default=_env_int("DEVICES", 10_000))
    parser.add_argument("--sensors", type=int, default=_env_int("SENSORS", 20))
    parser.add_argument("--duration", type=int, default=_env_int("DURATION", 15), help="seconds per path")
    parser.add_argument("--mix-duration", type=int, default=_env_int("MIX_DURATION", 60))
    parser.add_argument(
        "--mix-rate",
        type=float,
        default=_env_int("MIX_RATE", None),
        help="requests/s of the fleet mix (default: DEVICES x (1/10 + 1/60), the agent's defaults)",
    )
    parser.add_argument("--workers", type=int, default=_env_int("WORKERS", cores), help="default: gunicorn.conf.py's")
    parser.add_argument("--connections", type=int, default=_env_int("CONNECTIONS", None), help="default 2 x workers")
    parser.add_argument("--mix-connections", type=int, default=_env_int("MIX_CONNECTIONS", 64))
    parser.add_argument("--wrk-threads", type=int, default=_env_int("WRK_THREADS", 1))
    parser.add_argument(
        "--db-devices",
        type=int,
        default=_env_int("DB_DEVICES", None),
        help="devices pgbench replays (default: as many as the fleet, at most 512: four per script, so the rows are "
        "spread over the tables and pgbench's own work stays small)",
    )
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE", "sensorsync_bench"))
    parser.add_argument("--pg-host", default=os.environ.get("BENCH_PG_HOST", "127.0.0.1"))
    parser.add_argument("--pg-port", default=os.environ.get("BENCH_PG_PORT", "5432"))
    parser.add_argument("--pg-user", default=os.environ.get("BENCH_PG_USER", "postgres"))
    parser.add_argument("--port", type=int, default=_env_int("BENCH_PORT", 0), help="default: a free port")
    parser.add_argument("--out", default=os.environ.get("BENCH_OUT", str(ROOT / "var" / "bench")))
    # The real agent's fleet (bench.fleet, bench.realfleet).
    parser.add_argument(
        "--fleet-devices",
        type=int,
        default=_env_int("FLEET_DEVICES", 100_000),
        help="devices seeded for the real-agent fleet and the capacity search (its upper bound)",
    )
    parser.add_argument("--capacity-runs", type=int, default=_env_int("CAPACITY_RUNS", 4), help="per search; 0: none")
    parser.add_argument("--capacity-duration", type=int, default=_env_int("CAPACITY_DURATION", 60))
    parser.add_argument("--capacity-start", type=int, default=_env_int("CAPACITY_START", 40_000))
    parser.add_argument("--capacity-start-mqtt", type=int, default=_env_int("CAPACITY_START_MQTT", 60_000))
    parser.add_argument("--capacity-precision", type=float, default=0.1)
    parser.add_argument("--fleet-connections", type=int, default=_env_int("FLEET_CONNECTIONS", 128))
    parser.add_argument(
        "--cost-rate", type=float, default=_env_int("COST_RATE", 300), help="reports/s of the per-report cost runs"
    )
    parser.add_argument("--mqtt", default=os.environ.get("MQTT", "on"), choices=["on", "off"])
    parser.add_argument("--mqtt-workers", type=int, default=_env_int("MQTT_WORKERS", 2))
    parser.add_argument(
        "--mqtt-payload", type=int, default=_env_int("MQTT_PAYLOAD", 1500), help="bytes per transport-ceiling message"
    )
    parser.add_argument("--transport-messages", type=int, default=_env_int("TRANSPORT_MESSAGES", 50_000))
    parser.add_argument(
        "--soak",
        type=int,
        default=_env_int("SOAK", 0),
        help="seconds of the MQTT ingestion soak, run alone after seeding (make bench-soak: 600); 0: the benchmark",
    )
    parser.add_argument("--soak-devices", type=int, default=_env_int("SOAK_DEVICES", 20_000))
    parser.add_argument(
        "--strict", action="store_true", default=bool(os.environ.get("BENCH_STRICT")), help="exit 2 on a missed target"
    )
    args = parser.parse_args(argv)
    args.connections = args.connections or 2 * args.workers
    args.db_devices = args.db_devices or min(args.devices, 4 * pgbench.MAX_SCRIPTS)
    args.mix_rate = args.mix_rate or round(args.devices * (1 / 10 + 1 / 60))
    if args.soak:
        args.fleet_devices = args.soak_devices
    args.fleet_devices = max(args.fleet_devices, args.devices)
    if args.capacity_runs:
        args.capacity_start = min(args.capacity_start, args.fleet_devices)
        args.capacity_start_mqtt = min(args.capacity_start_mqtt, args.fleet_devices)
    if args.pg_host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the benchmark runs on loopback only: --pg-host must be 127.0.0.1")
    for name in ("devices", "sensors", "duration", "mix_duration", "workers", "connections", "wrk_threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.connections < args.wrk_threads or args.mix_connections < args.wrk_threads:
        parser.error("connections must be at least the number of wrk threads")
    return args


class BenchError(RuntimeError):
    pass


class Log:
    """Prints and keeps every line, so the text copy is what was printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.started = time.perf_counter()

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def step(self, text: str) -> None:
        self(f"[{time.perf_counter() - self.started:5.0f} s] {text}")


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed (Debian: apt-get install {package}); `make bench` installs it.")
    return path


def _run(command: list[str], *, env=None, timeout: int, log: Log | None = None, check: bool = True) -> str:
    completed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    output = completed.stdout + completed.stderr
    if check and completed.returncode != 0:
        raise BenchError(f"{' '.join(command[:4])} ... failed ({completed.returncode}):\n{output[-3000:]}")
    if log is not None:
        for line in completed.stdout.splitlines():
            log(line)
    return output


# --------------------------------------------------------------------------------------------------------------
# The app server
# --------------------------------------------------------------------------------------------------------------


class Server:
    """gunicorn started with ``gunicorn.conf.py``; stopped by its own pid (and its workers' pids)."""

    def __init__(self, *, env: dict, port: int, log_path: Path) -> None:
        self.env = env
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    def start(self, timeout: float = 60) -> None:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(gunicorn), "--config", str(ROOT / "gunicorn.conf.py")],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops the server itself
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as answer:
                    if answer.status == 200 and len(self.workers()) >= int(self.env["GUNICORN_WORKERS"]):
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise BenchError(f"gunicorn did not answer /healthz within {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def workers(self) -> list[int]:
        if self.process is None:
            return []
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def memory(self) -> dict[int, dict[str, float]]:
        """Each worker's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
        found = {}
        for pid in self.workers():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            values = {}
            for line in status.splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024
            found[pid] = values
        return found

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        workers = self.workers()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid in workers:  # a worker that outlived its master
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


class MemorySampler(threading.Thread):
    """Peak resident memory of the workers serving the fleet mix, sampled every second and once at its end."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.pids = set(server.workers())
        self.peak: dict[int, float] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            self.sample()

    def sample(self) -> None:
        for pid, values in self.server.memory().items():
            if pid not in self.pids:
                continue
            peak = max(values.get("VmRSS", 0.0), values.get("VmHWM", 0.0))
            self.peak[pid] = max(self.peak.get(pid, 0.0), peak)


# --------------------------------------------------------------------------------------------------------------
# Load phases
# --------------------------------------------------------------------------------------------------------------

DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")


def db_counters(dsn: dict) -> dict[str, int] | None:
    """PostgreSQL's own counters for the benchmark database: what the server did, whatever Django logged."""
    query = f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database WHERE datname = '{dsn['dbname']}'"
    command = [_tool("psql", "postgresql-client"), "-h", dsn["host"], "-p", dsn["port"], "-U", dsn["user"]]
    try:
        output = _run([*command, "-d", "postgres", "-Atc", query], timeout=30).strip()
    except (BenchError, subprocess.TimeoutExpired):
        return None
    return dict(zip(DB_COUNTERS, map(int, output.split("|")), strict=True)) if output else None


def db_sessions_end(dsn: dict, *, reconnects: bool) -> None:
    """Make PostgreSQL count everything the app did so far: an idle session may hold up to 10 s of its counters,
    a session that ends reports them at once. Only sessions idle for a while are ended (wrk stops with requests
    still in flight, and a session is idle between two statements of one request too); the workers reconnect on
    their next request, CONN_HEALTH_CHECKS noticing the closed connection first. Without health checks, wait the
    10 s instead."""
    if not reconnects:
        time.sleep(10.5)
        return
    app = (
        f"FROM pg_stat_activity WHERE datname = '{dsn['dbname']}' AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    settled = "state = 'idle' AND state_change < now() - interval '500 milliseconds'"
    command = [_tool("psql", "postgresql-client"), "-h", dsn["host"], "-p", dsn["port"], "-U", dsn["user"]]
    command += ["-d", "postgres", "-Atc"]
    deadline = time.monotonic() + 10
    while _run([*command, f"SELECT count(*) {app} AND NOT ({settled})"], timeout=30).strip() != "0":
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    _run([*command, f"SELECT count(pg_terminate_backend(pid)) {app} AND {settled}"], timeout=30)
    time.sleep(0.3)  # the backends exit (and report) right after the signal


def db_per_request(before: dict | None, after: dict | None, requests: int) -> dict[str, float] | None:
    """Transactions and rows written per request during a phase (PostgreSQL flushes its counters within ~1 s)."""
    if not before or not after or not requests:
        return None
    delta = {key: after[key] - before[key] for key in DB_COUNTERS}
    return {
        "transactions": (delta["xact_commit"] + delta["xact_rollback"]) / requests,
        "rows_written": (delta["tup_inserted"] + delta["tup_updated"] + delta["tup_deleted"]) / requests,
        "rows_updated": delta["tup_updated"] / requests,
    }


def wrk_phase(
    args,
    *,
    label: str,
    port: int,
    mode: str,
    duration: int,
    connections: int,
    extra: dict[str, str],
    log: Log,
    dsn: dict | None = None,
    flush: Callable[[], None] | None = None,
    on_done: Callable[[], None] | None = None,
    app_pid: int | None = None,
) -> dict:
    threads = min(args.wrk_threads, connections)
    command = [
        _tool("wrk", "wrk"),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=10s",
        f"--script={LUA}",
        f"http://127.0.0.1:{port}",
        "--",
        f"mode={mode}",
        f"threads={threads}",
        *(f"{k}={v}" for k, v in extra.items()),
    ]
    load_before = _loadavg()
    counters = db_counters(dsn) if dsn else None
    cpu_before = cpu.snapshot(app_pid)
    output = _run(command, timeout=duration + 60)
    if on_done is not None:
        on_done()
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
            break
    else:
        raise BenchError(f"wrk ({mode}) printed no result:\n{output[-2000:]}")
    result["loadavg"] = [load_before, _loadavg()]
    result["connections"] = connections
    if dsn and flush is not None:
        flush()
        result["db_per_request"] = db_per_request(counters, db_counters(dsn), result["requests"])
    result["cpu_ms_per_request"] = cpu.per_request_ms(cpu_before, cpu.snapshot(app_pid), result["requests"])
    db = result.get("db_per_request") or {}
    cpu_ms = result["cpu_ms_per_request"] or {}
    lat = result["latency_us"]
    log(
        f"    {label:<22} {table.rps(result):>8,.0f} req/s  p50 {lat['p50'] / 1000:6.1f} ms  "
        f"p99 {lat['p99'] / 1000:7.1f} ms  errors {table.errors(result)}  "
        f"status {dict(sorted(result['status'].items()))}"
        + (f"  db: {db['transactions']:.2f} xact, {db['rows_written']:.2f} rows written /req" if db else "")
        + (
            f"  cpu ms/req: app {cpu_ms['app']:.2f}, db {cpu_ms['db']:.2f}, machine {cpu_ms['machine']:.2f}"
            if cpu_ms
            else ""
        )
        + f"  load {result['loadavg'][1]}"
    )
    if result.get("errors_sample"):
        for sample in result["errors_sample"][:3]:
            log(f"      e.g. {sample[:200]}")
    return result


# --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    log = Log()
    out = Path(args.out)
    work = out / "work"
    results_dir = out / "results"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    port = args.port or _free_port()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    dsn = {"host": args.pg_host, "port": str(args.pg_port), "user": args.pg_user, "dbname": args.database}
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "SENSORSYNC_AGENT_RATE_LIMIT": "off",
    }
    # The server's own settings; manage.py and the prepare steps must not write metrics files.
    server_env = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(args.workers),
        "PROMETHEUS_MULTIPROC_DIR": str(work / "prometheus"),
    }
    results: dict = {
        "started_at": stamp,
        "config": {
            "devices": args.devices,
            "sensors": args.sensors,
            "duration": args.duration,
            "mix_duration": args.mix_duration,
            "workers": args.workers,
            "connections": args.connections,
            "mix_connections": args.mix_connections,
            "wrk_threads": args.wrk_threads,
            "db_devices": args.db_devices,
            "database": args.database,
        },
        "mix_rate": args.mix_rate,
        "phases": {},
    }
    server = Server(env=server_env, port=port, log_path=work / "gunicorn.log")
    failure: str | None = None
    try:
        _header(args, results, log, dsn, port)
        _prepare_database(args, env, dsn, log, results)
        _load(args, dsn, env, server, port, work, log, results)
    except KeyboardInterrupt:
        failure = "interrupted"
        log("\nInterrupted: stopping everything the benchmark started.")
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        failure = str(exc)
        log(f"\nThe benchmark could not finish: {exc}")
    finally:
        server.stop()

    log("")
    lines = table.report_lines(results) if "probe" in results else []
    for line in lines:
        log(line)
    results["failure"] = failure
    log("")
    log(f"Total {time.perf_counter() - log.started:.0f} s. Raw figures: {results_dir / (stamp + '.json')}")
    (results_dir / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    (results_dir / f"{stamp}.txt").write_text("\n".join(log.lines) + "\n")
    shutil.copyfile(results_dir / f"{stamp}.json", results_dir / "latest.json")
    shutil.copyfile(results_dir / f"{stamp}.txt", results_dir / "latest.txt")
    if failure:
        return 1
    return 2 if args.strict and table.missed(results) else 0


def _header(args, results: dict, log: Log, dsn: dict, port: int) -> None:
    _tool("wrk", "wrk")
    _tool("pgbench", "postgresql-contrib")
    psql = _tool("psql", "postgresql-client")
    connect = ["-h", dsn["host"], "-p", dsn["port"], "-U", dsn["user"], "-d", "postgres"]
    version = _run([psql, *connect, "-Atc", "SHOW server_version"], timeout=30).strip()
    wrk_version = _run([_tool("wrk", "wrk"), "--version"], timeout=10, check=False).split(" [")[0]
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores, busy = os.cpu_count(), _loadavg()
    environment = {
        "cores": cores,
        "memory_gb": round(memory_gb, 1),
        "python": platform.python_version(),
        "postgresql": version,
        "wrk": wrk_version,
        "loadavg_at_start": busy,
    }
    results["environment"] = environment
    cfg = results["config"]
    log(f"SensorSync benchmark  {results['started_at']}")
    log(
        f"machine: {environment['cores']} cores, {environment['memory_gb']} GiB, load average "
        f"{environment['loadavg_at_start']} at start; PostgreSQL {version} on {dsn['host']}:{dsn['port']}; "
        f"Python {environment['python']}; {wrk_version}"
    )
    log(
        f"fleet: {cfg['devices']:,} devices x {cfg['sensors']} sensors; {cfg['duration']} s per path, fleet mix "
        f"{cfg['mix_duration']} s at {args.mix_rate:,.0f} req/s"
    )
    log(
        f"server: gunicorn (gunicorn.conf.py), {cfg['workers']} sync workers on 127.0.0.1:{port}, settings "
        "bench.settings = the product's settings + the framework-ceiling view: product and ceilings share one "
        "server, its middleware and settings; DEBUG off"
    )
    log(
        f"load: wrk, a separate process ({cfg['wrk_threads']} thread(s), {cfg['connections']} connections per path, "
        f"{cfg['mix_connections']} for the mix), agent protocol: device keys, gzip bodies, If-None-Match"
    )
    log(
        f"real agents (bench.fleet): {args.fleet_devices:,} seeded; capacity searches of at most {args.capacity_runs} "
        f"sizes x {args.capacity_duration} s from {args.capacity_start:,} (MQTT {args.capacity_start_mqtt:,}); MQTT "
        f"{args.mqtt} ({args.mqtt_workers} ingestion workers)"
    )
    log("NOTE: SENSORSYNC_AGENT_RATE_LIMIT=off for the load test (wrk sends one device far more than 7 a minute).")
    if busy is not None and busy >= (cores or 1) / 2:
        log(
            f"NOTE: the machine is busy (load average {busy} on {cores} cores): absolute figures are "
            "low and noisy; each ratio compares a path with ceiling runs just before and after it."
        )
    log("")


def _prepare_database(args, env: dict, dsn: dict, log: Log, results: dict) -> None:
    psql = _tool("psql", "postgresql-client")
    base = [psql, "-h", dsn["host"], "-p", dsn["port"], "-U", dsn["user"], "-v", "ON_ERROR_STOP=1", "-q"]
    log.step(f"database {args.database}: dropped and created fresh, migrated")
    _run([*base, "-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'], timeout=120)
    _run([*base, "-d", "postgres", "-c", f'CREATE DATABASE "{args.database}"'], timeout=120)
    _run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, timeout=600)

    prepare = [sys.executable, "-m", "bench.prepare"]
    common = ["--out", str(Path(args.out) / "work"), "--devices", str(args.fleet_devices)]
    common += ["--sensors", str(args.sensors)]
    common += ["--db-devices", str(args.db_devices)]
    quiet = {**env, "DJANGO_LOG_LEVEL": "WARNING"}  # one log line per reconciliation would drown the progress
    log.step(
        f"seeding {args.fleet_devices:,} devices x {args.sensors} sensors (+{args.db_devices} for the database "
        "ceiling): templates through the services, clones by COPY"
    )
    _run([*prepare, "seed", *common], env=quiet, timeout=1800, log=log)
    work = Path(args.out) / "work"
    results["seed"] = json.loads((work / "seed.json").read_text())
    shown = {**results["seed"]["settings"], "log_level": env.get("DJANGO_LOG_LEVEL", "INFO")}
    log("  server settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    log.step("VACUUM (ANALYZE): fresh statistics and visibility maps, as on a database in service")
    _run([*base, "-d", args.database, "-c", "VACUUM (ANALYZE)"], timeout=1800)
    log.step("in-process probe: SQL statements per request, time per sensor, the changed reports' SQL")
    _run([*prepare, "probe", *common], env=quiet, timeout=1800, log=log)
    results["probe"] = json.loads((work / "probe.json").read_text())
    log.step("the real agent's fleet file (bench.fleet): both generations' bodies, per device and template")
    _run([*prepare, "fleet", *common], env=quiet, timeout=1800, log=log)


def _pgbench_scripts(work: Path) -> tuple[list[Path], float]:
    """The captured reports as at most ``pgbench.MAX_SCRIPTS`` scripts, each device's two reports in one script and
    the devices dealt round-robin between scripts; returns the scripts and the mean reports per script (pgbench
    picks scripts with equal weights, so that is what one script run replays on average)."""
    capture = json.loads((work / "db_capture.json").read_text())
    devices = capture["devices"]
    groups = [devices[i :: pgbench.MAX_SCRIPTS] for i in range(min(len(devices), pgbench.MAX_SCRIPTS))]
    scripts = [pgbench.replay_script([report for device in group for report in device]) for group in groups]
    return pgbench.scripts_write(scripts, work / "pgbench"), sum(s.reports for s in scripts) / len(scripts)


def _database_ceiling(args, dsn: dict, scripts: list[Path], per_script: float, log: Log) -> dict:
    """One pgbench run of the captured changed reports (the app server idle); changed reports per second."""
    clients = args.workers  # the app runs at most one transaction per worker at a time
    load_before = _loadavg()
    cpu_before = cpu.snapshot(None)
    result = pgbench.run(
        scripts,
        dsn=dsn,
        clients=clients,
        threads=min(2, clients),
        duration=args.duration,
        timeout=args.duration + 120,
    )
    run = {
        "tps": result.tps,
        "transactions": result.transactions,
        "failed": result.failed,
        "latency_ms": result.latency_ms,
        "ok": result.ok,
        "reports_per_script": per_script,
        "reports_per_s": result.tps * per_script if result.ok and result.tps else None,
        "clients": clients,
        "scripts": len(scripts),
        "loadavg": [load_before, _loadavg()],
    }
    if result.ok and result.transactions:
        time.sleep(0.5)  # pgbench's backends exit after it does; their CPU counts once the postmaster reaps them
        run["cpu_ms_per_report"] = cpu.per_request_ms(cpu_before, cpu.snapshot(None), result.transactions * per_script)
    if not result.ok:
        log("    pgbench failed; the database ceiling is unknown:")
        for line in result.output.strip().splitlines()[-8:]:
            log(f"      {line}")
        return run
    log(
        f"    {'database ceiling':<22} {run['reports_per_s']:>8,.0f} changed reports/s ({result.tps:,.1f} scripts/s of "
        f"{per_script:g} reports, {result.latency_ms:.1f} ms each, {result.transactions} runs, 0 failed)  "
        f"cpu ms/report: db {run['cpu_ms_per_report']['db']:.2f}, machine {run['cpu_ms_per_report']['machine']:.2f}  "
        f"load {run['loadavg'][1]}"
    )
    return run


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v]
    return sum(known) / len(known) if known else None


def _load(args, dsn: dict, env: dict, server: Server, port: int, work: Path, log: Log, results: dict) -> None:
    seed = results["seed"]
    token = (work / "staff_token.txt").read_text().strip()
    agent = {
        "data": str(work / "devices.bin"),
        "states": str(work / "states.txt"),
        "poll": seed["paths"]["poll"],
        "report": seed["paths"]["report"],
    }
    staff = {"header": f"Authorization: Token {token}"}
    ceiling = {"paths": str(work / "paths_ceiling.txt")}
    phases = results["phases"]
    states = [sys.executable, "-m", "bench.prepare", "states", "--out", str(work), "--liveness"]
    health_checks = bool(seed["settings"].get("CONN_HEALTH_CHECKS"))

    def flush() -> None:
        db_sessions_end(dsn, reconnects=health_checks)

    log.step(f"gunicorn: starting {args.workers} workers on 127.0.0.1:{port}")
    server.start()
    if args.soak:  # make bench-soak: the MQTT ingestion soak alone
        _real_agents(args, dsn, env, server, port, work, log, results)
        return

    def phase(key: str, mode: str, extra: dict, *, duration=None, connections=None, on_done=None):
        phases[key] = wrk_phase(
            args,
            dsn=dsn,
            flush=flush,
            label=key,
            port=port,
            mode=mode,
            duration=duration or args.duration,
            connections=connections or args.connections,
            extra=extra,
            log=log,
            on_done=on_done,
            app_pid=server.pid,
        )
        return phases[key]

    log.step("warm-up (discarded): 3 s of the ceiling view, 3 s of 304 polls")
    for mode, extra in (("get", ceiling), ("poll304", agent)):
        wrk_phase(
            args, label="warm-up", port=port, mode=mode, duration=3, connections=args.connections, extra=extra, log=log
        )

    log.step(
        f"load phases, {args.duration} s each, {args.connections} connections (closed loop: throughput at "
        "saturation); each path between two runs of its ceiling; (a) to (c) with every device seen just before "
        "(no liveness write due: the common case), the mix with last-seen times spread as in a steady fleet"
    )
    ceilings = results["ceilings"] = {}
    phase("ceiling_1", "get", ceiling)
    _run([*states, "recent"], env=env, timeout=300, log=log)
    phase("poll304", "poll304", agent)
    phase("ceiling_2", "get", ceiling)
    _run([*states, "recent"], env=env, timeout=300, log=log)
    phase("poll200", "poll200", agent)
    phase("ceiling_3", "get", ceiling)
    _run([*states, "recent"], env=env, timeout=300, log=log)
    phase("unchanged", "unchanged", agent)
    phase("ceiling_4", "get", ceiling)
    runs = [table.rps(phases[f"ceiling_{n}"]) for n in (1, 2, 3, 4)]
    for key, (before, after) in (("poll304", (1, 2)), ("poll200", (2, 3)), ("unchanged", (3, 4))):
        ceilings[key] = _mean([runs[before - 1], runs[after - 1]])
    results["framework_ceiling_rps"] = _mean(runs)
    measured = [r for r in runs if r is not None]  # a run that served nothing has no rate
    slowest = min(measured, default=0.0)
    spread = max(measured) / slowest if slowest else None
    log(
        f"    framework ceiling runs: {', '.join('-' if r is None else f'{r:,.0f}' for r in runs)} req/s"
        + (f" (spread {spread:.2f}x)" if spread else "")
    )

    _run([*states, "keep"], env=env, timeout=300, log=log)
    scripts, per_script = _pgbench_scripts(work)
    database = results["pgbench"] = [_database_ceiling(args, dsn, scripts, per_script, log)]
    phase("changed", "changed", agent)
    database.append(_database_ceiling(args, dsn, scripts, per_script, log))
    ceilings["changed"] = _mean([run["reports_per_s"] for run in database])
    results["database_ceiling_reports_per_s"] = ceilings["changed"]

    phase("device_sensors", "get", {"paths": str(work / "paths_device_sensors.txt"), **staff})
    phase("fleet_sensors_20", "get", {"paths": str(work / "paths_fleet_sensors_20.txt"), **staff})
    phase("fleet_sensors", "get", {"paths": str(work / "paths_fleet_sensors.txt"), **staff})

    _run([*states, "spread"], env=env, timeout=300, log=log)
    log.step(
        f"fleet mix: {args.mix_rate:,.0f} req/s offered for {args.mix_duration} s ({args.mix_connections} "
        "connections, paced); 6 reports per poll, 95% unchanged, 95% of polls 304"
    )
    sampler = MemorySampler(server)
    sampler.start()
    try:
        phase(
            "mix",
            "mix",
            {**agent, "rate": str(args.mix_rate)},
            duration=args.mix_duration,
            connections=args.mix_connections,
            on_done=sampler.sample,
        )
    finally:
        sampler.stop_event.set()
        sampler.join()
    lag = phases["mix"].get("lag_ms", {})
    if lag.get("n"):
        log(
            f"    schedule: {lag.get('late', 0)} requests started > 1 ms after their slot, {lag.get('over50', 0)} "
            f"> 50 ms, max {lag.get('max', 0):.0f} ms"
        )
    # The mix's target is absolute; a ceiling run right after it says what the machine could do at that moment.
    phase("ceiling_after_mix", "get", ceiling)
    results["memory_mb"] = {str(pid): round(peak, 1) for pid, peak in sampler.peak.items()}
    log(
        "    worker peak memory (MB): "
        + ", ".join(f"{peak:.0f}" for peak in sorted(sampler.peak.values(), reverse=True))
    )
    _real_agents(args, dsn, env, server, port, work, log, results)
    results["environment"]["loadavg_at_end"] = _loadavg()


def _real_agents(args, dsn: dict, env: dict, server: Server, port: int, work: Path, log: Log, results: dict) -> None:
    """The real agent's fleet (``bench.realfleet``): independent ceilings, per-report costs over HTTP and MQTT,
    the transport ceiling, the capacity searches, the soak."""
    stage = realfleet.Stage(args, env, work, port, server.pid, log, dsn, results)
    real = results["real"] = {}
    if args.soak:
        log.step(f"MQTT: the project's broker (manage.py mqtt_broker) and {args.mqtt_workers} mqtt_ingest workers")
        soaked = realfleet.mqtt_start(stage, args.mqtt_workers)
        try:
            log.step(f"soak: {args.soak} s of MQTT ingestion at {args.soak_devices:,} agents, worker RSS every 10 s")
            real["soak"] = realfleet.soak(stage, soaked, devices=args.soak_devices, duration=args.soak)
        finally:
            soaked.stop()
        return
    log.step(
        f"independent ceilings, {args.duration} s each: the bare project (bench.bare: no middleware, one indexed read, "
        "same gunicorn) beside the product's ceiling view; the minimal SQL of a changed report beside the replay"
    )
    product_before = results["phases"].get("ceiling_after_mix")
    real["bare"] = [realfleet.bare_ceiling(stage, duration=args.duration)]
    real["product_ceiling"] = wrk_phase(
        args,
        label="ceiling (product)",
        port=port,
        mode="get",
        duration=args.duration,
        connections=args.connections,
        extra={"paths": str(work / "paths_ceiling.txt")},
        log=log,
        app_pid=server.pid,
    )
    real["bare"].append(realfleet.bare_ceiling(stage, duration=args.duration))
    del product_before
    real["minimal_sql"] = [realfleet.minimal_sql_ceiling(stage, duration=args.duration)]
    real["minimal_sql"].append(realfleet.minimal_sql_ceiling(stage, duration=args.duration))

    mqtt: realfleet.Mqtt | None = None
    if args.mqtt == "on":
        log.step(f"MQTT: the project's broker (manage.py mqtt_broker) and {args.mqtt_workers} mqtt_ingest workers")
        mqtt = realfleet.mqtt_start(stage, args.mqtt_workers)
    try:
        log.step(
            f"per-report app CPU, {args.cost_rate:g} reports/s paced for {args.duration} s each, the real agent's "
            "bodies (both generations): unchanged and metrics-only over HTTP, unchanged over MQTT"
        )
        real["costs"] = realfleet.per_report_costs(stage, mqtt)
        if mqtt is not None:
            log.step("MQTT transport ceiling: the broker's own publish-to-deliver rate to a no-op subscriber")
            real["transport"] = realfleet.transport_ceiling(stage, mqtt, messages=args.transport_messages)
        if args.capacity_runs:
            log.step(
                f"capacity search, {args.capacity_duration} s per size, at most {args.capacity_runs} sizes: "
                f"p99 < {capacity.P99_MAX_MS:.0f} ms, no error, schedule kept; (a) HTTP only"
            )
            real["capacity_http"] = realfleet.capacity_search(stage, mqtt=None, label="HTTP only")
            if mqtt is not None:
                log.step("capacity search (b): MQTT reports, HTTP polls")
                real["capacity_mqtt"] = realfleet.capacity_search(stage, mqtt=mqtt, label="MQTT reports")
    finally:
        if mqtt is not None:
            mqtt.stop()


if __name__ == "__main__":
    sys.exit(main())
