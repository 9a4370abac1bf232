"""From one run's measurements to the printed verdict: one row per path, its ceiling, the ratio and the target.

Pure: ``report_lines(results)`` takes the dict ``bench.run`` collects (and writes as JSON) and returns text.
Ratios compare figures from the same run on the same machine, so they hold when absolute numbers drift.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import realtable

# The targets.
POLL_304_MIN = 0.70  # x framework ceiling
UNCHANGED_MIN = 0.60  # x framework ceiling
CHANGED_MIN = 0.35  # x database ceiling
FLEET_LIST_MAX = 3.0  # p50 of the fleet-wide list / p50 of one device's list
MIX_P99_MAX_MS = 250.0
MIX_RATE_MIN = 0.97  # achieved / offered: the server kept up with the fleet
# Requests that started more than MIX_P99_MAX_MS after their slot (wrk waited for a free connection): their
# latency from the fleet's point of view is at least that, so more than 1% of them breaks the p99 target even when
# the answers, timed from when they were sent, were fast.
MIX_LATE_MAX = 0.01
STATEMENTS_MAX = 8
MEMORY_MAX_MB = 200.0
PER_SENSOR_GROWTH_MAX = 1.25  # us/sensor at the largest size vs at the fleet's size
MARGINAL_GROWTH_MAX = 1.5  # marginal us/sensor of the top range vs the lower range

MIX_POLL_SHARE = 1 / 7  # an agent polls every 60 s and reports every 10 s
MIX_CHANGED_SHARE = 0.05
MIX_POLL_200_SHARE = 0.05


@dataclass
class Row:
    path: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    app_ms: float | None = None  # in-process median: the app alone, no HTTP server or TCP
    sql: str = "-"
    db_xact: float | None = None  # transactions PostgreSQL counted per request (health checks included)
    db_rows: float | None = None  # rows PostgreSQL inserted, updated or deleted per request
    versus: str = "-"
    ceiling: str = "-"
    ratio: str = "-"
    target: str = "-"
    result: str = "-"  # PASS, FAIL or -


def _f(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _down(value: float) -> str:
    """Two decimals rounded down: a ratio held against a minimum never shows more than it reached."""
    return f"{math.floor(round(value * 100, 9)) / 100:.2f}"


def _up(value: float) -> str:
    """Two decimals rounded up: a ratio held against a maximum never shows less than it was."""
    return f"{math.ceil(round(value * 100, 9)) / 100:.2f}"


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


def rps(phase: dict | None) -> float | None:
    if not phase or not phase.get("duration_us"):
        return None
    return phase["requests"] / (phase["duration_us"] / 1e6)


def errors(phase: dict | None) -> int:
    """Requests that failed: socket errors, timeouts and 4xx/5xx answers."""
    if not phase:
        return 0
    e = phase.get("errors", {})
    bad_status = sum(n for code, n in phase.get("status", {}).items() if int(code) >= 400)
    return e.get("connect", 0) + e.get("read", 0) + e.get("write", 0) + e.get("timeout", 0) + bad_status


def pass_fail(ok: bool | None) -> str:
    if ok is None:
        return "-"
    return "PASS" if ok else "FAIL"


def _statements(probe: dict, key: str, sensors: int | None = None) -> int | None:
    value = probe.get("statements", {}).get(key)
    if value is None:
        return None
    if sensors is not None:
        value = value.get(str(sensors)) or value.get(sensors)
        if not value:
            return None
    if isinstance(value, list):
        return max(v["total"] for v in value)
    return value["total"]


def mix_statements(probe: dict, sensors: int) -> float | None:
    parts = [
        _statements(probe, "poll_304"),
        _statements(probe, "poll_200"),
        _statements(probe, "report_unchanged", sensors),
        _statements(probe, "report_changed", sensors),
    ]
    p304, p200, unchanged, changed = parts
    if p304 is None or p200 is None or unchanged is None or changed is None:
        return None
    polls = (1 - MIX_POLL_200_SHARE) * p304 + MIX_POLL_200_SHARE * p200
    reports = (1 - MIX_CHANGED_SHARE) * unchanged + MIX_CHANGED_SHARE * changed
    return MIX_POLL_SHARE * polls + (1 - MIX_POLL_SHARE) * reports


def mix_late_share(phase: dict) -> float:
    """The share of the mix's requests that started more than MIX_P99_MAX_MS after their slot."""
    lag = phase.get("lag_ms") or {}
    return lag.get("over250", 0) / lag["n"] if lag.get("n") else 0.0


def _outcomes_ok(phase: dict | None, expected: str) -> bool | None:
    """Every answered report had the expected outcome (what the load generator counted in the bodies)."""
    if not phase:
        return None
    answered = int(phase.get("status", {}).get("200", 0))
    return answered > 0 and phase.get("outcome", {}).get(expected, 0) == answered


# A row of one load phase: its name, the phase's key in ``results["phases"]``, and its SQL statements per request.
_Timed = Callable[[str, str, int | float | None], Row]


def rows(results: dict) -> list[Row]:
    phases = results.get("phases", {})
    probe = results.get("probe", {})
    in_process = probe.get("in_process", {})

    def timed(name: str, key: str, sql: int | float | None) -> Row:
        return _timed_row(name, key, phases.get(key), in_process, sql)

    table = [
        timed(f"framework ceiling, run {n}", f"ceiling_{n}", _statements(probe, "ceiling"))
        for n in range(1, 10)
        if f"ceiling_{n}" in phases
    ]
    table += _framework_rows(results, timed)
    table += _database_rows(results, timed)
    table += _list_rows(results, timed)
    table += _mix_rows(results, timed)
    return table


def _timed_row(name: str, key: str, phase: dict | None, in_process: dict, sql: int | float | None) -> Row:
    lat = (phase or {}).get("latency_us", {})
    app = in_process.get("ceiling" if key.startswith("ceiling") else key, {}).get("median_s")
    db = (phase or {}).get("db_per_request") or {}
    return Row(
        name,
        rps(phase),
        _ms(lat.get("p50")),
        _ms(lat.get("p99")),
        None if app is None else app * 1000,
        "-" if sql is None else (f"{sql:.1f}" if isinstance(sql, float) else str(sql)),
        db.get("transactions"),
        db.get("rows_written"),
    )


def _versus_framework(row: Row, ceiling: float | None, minimum: float | None, extra_ok: bool | None = True) -> Row:
    row.versus, row.ceiling = "framework", _f(ceiling)
    if row.rps is not None and ceiling:
        ratio = row.rps / ceiling
        row.ratio = _down(ratio) if minimum is not None else f"{ratio:.2f}"
        if minimum is not None:
            row.target = f">= {minimum:.2f}"
            row.result = pass_fail(ratio >= minimum and extra_ok is not False)
    return row


def _framework_rows(results: dict, timed: _Timed) -> list[Row]:
    """(a) to (c), polls and unchanged reports, against the framework ceiling measured around each."""
    probe = results.get("probe", {})
    sensors = results["config"]["sensors"]
    ceilings = results.get("ceilings", {})
    framework = results.get("framework_ceiling_rps")
    poll304 = timed("(a) poll, 304", "poll304", _statements(probe, "poll_304"))
    poll200 = timed("(b) poll, 200", "poll200", _statements(probe, "poll_200"))
    unchanged = timed(f"(c) report unchanged ({sensors})", "unchanged", _statements(probe, "report_unchanged", sensors))
    ok = _outcomes_ok(results.get("phases", {}).get("unchanged"), "unchanged")
    return [
        _versus_framework(poll304, ceilings.get("poll304") or framework, POLL_304_MIN),
        _versus_framework(poll200, ceilings.get("poll200") or framework, None),
        _versus_framework(unchanged, ceilings.get("unchanged") or framework, UNCHANGED_MIN, ok),
    ]


def _database_rows(results: dict, timed: _Timed) -> list[Row]:
    """The database ceiling's runs, and (d), changed reports, against it."""
    probe = results.get("probe", {})
    sensors = results["config"]["sensors"]
    table = [
        Row(f"database ceiling, run {n}", run.get("reports_per_s"), sql="replay")
        for n, run in enumerate(results.get("pgbench") or [], start=1)
    ]
    changed = timed(f"(d) report changed ({sensors})", "changed", _statements(probe, "report_changed", sensors))
    database = results.get("ceilings", {}).get("changed") or results.get("database_ceiling_reports_per_s")
    changed.versus, changed.ceiling = "database", _f(database)
    if changed.rps is not None and database:
        ratio = changed.rps / database
        changed.ratio, changed.target = _down(ratio), f">= {CHANGED_MIN:.2f}"
        applied = _outcomes_ok(results.get("phases", {}).get("changed"), "applied") is True
        changed.result = pass_fail(ratio >= CHANGED_MIN and applied)
    table.append(changed)
    return table


def _list_rows(results: dict, timed: _Timed) -> list[Row]:
    """(e), the fleet-wide sensor list, against one device's list."""
    probe = results.get("probe", {})
    device_list = timed("(e) one device's sensors", "device_sensors", _statements(probe, "device_sensors"))
    fleet = timed("(e) fleet sensors, 20/page", "fleet_sensors_20", _statements(probe, "fleet_sensors_20"))
    fleet.versus = "1 device p50"
    if fleet.p50_ms is not None and device_list.p50_ms:
        ratio = fleet.p50_ms / device_list.p50_ms
        fleet.ceiling = f"{device_list.p50_ms:.1f} ms"
        fleet.ratio, fleet.target = _up(ratio), f"<= {FLEET_LIST_MAX:.1f}"
        fleet.result = pass_fail(ratio <= FLEET_LIST_MAX)
    table = [device_list, fleet]
    if "fleet_sensors" in results.get("phases", {}):
        table.append(timed("(e) fleet sensors, 100/page", "fleet_sensors", _statements(probe, "fleet_sensors")))
    return table


def _mix_rows(results: dict, timed: _Timed) -> list[Row]:
    """(f), the fleet mix, against the rate the fleet offers; and the framework ceiling measured after it."""
    phases = results.get("phases", {})
    probe = results.get("probe", {})
    table = []
    mix = phases.get("mix")
    if mix:
        row = timed("(f) fleet mix", "mix", mix_statements(probe, results["config"]["sensors"]))
        offered = results.get("mix_rate")
        row.versus, row.ceiling = "offered", _f(offered)
        if row.rps is not None and offered:
            achieved = row.rps / offered
            row.ratio = _down(achieved)
            row.target = f"p99<{MIX_P99_MAX_MS:.0f}ms, 0 err"
            row.result = pass_fail(
                achieved >= MIX_RATE_MIN
                and (row.p99_ms or 0) < MIX_P99_MAX_MS
                and errors(mix) == 0
                and mix_late_share(mix) <= MIX_LATE_MAX
            )
        table.append(row)
    if "ceiling_after_mix" in phases:
        table.append(timed("framework ceiling, after mix", "ceiling_after_mix", _statements(probe, "ceiling")))
    return table


def format_rows(table: list[Row]) -> list[str]:
    headers = ["path", "req/s", "p50 ms", "p99 ms", "app ms", "SQL/req", "xact", "writes", "vs", "ceiling", "ratio"]
    headers += ["target", "result"]
    cells = [
        [
            r.path,
            _f(r.rps),
            _f(r.p50_ms, 1),
            _f(r.p99_ms, 1),
            _f(r.app_ms, 2),
            r.sql,
            _f(r.db_xact, 2),
            _f(r.db_rows, 2),
            r.versus,
            r.ceiling,
            r.ratio,
            r.target,
            r.result,
        ]
        for r in table
    ]
    widths = [max(len(row[i]) for row in [headers, *cells]) for i in range(len(headers))]
    right = {1, 2, 3, 4, 5, 6, 7, 9, 10}

    def line(row: list[str]) -> str:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(headers), rule, *(line(c) for c in cells)]


def statements_lines(probe: dict) -> tuple[list[str], bool | None]:
    """SQL statements per report by number of sensors, and whether they are constant and within the target."""
    sizes = probe.get("sizes") or []
    if not sizes:
        return [], None
    lines = ["  sensors    " + "".join(f"{n:>8}" for n in sizes)]
    ok = True
    for key, label in (("report_unchanged", "unchanged"), ("report_changed", "changed")):
        counts = [_statements(probe, key, n) for n in sizes]
        lines.append(f"  {label:<11}" + "".join(f"{'-' if c is None else c:>8}" for c in counts))
        known = [c for c in counts if c is not None]
        ok = ok and bool(known) and len(set(known)) == 1 and max(known) <= STATEMENTS_MAX
    return lines, ok


def per_sensor_lines(probe: dict, sensors: int) -> tuple[list[str], bool | None, str]:
    """Time per changed report and per sensor, by size; whether the cost per sensor stays flat, and why."""
    timing = {int(n): t for n, t in probe.get("timing", {}).items()}
    sizes = sorted(n for n in timing if n >= sensors)
    if len(sizes) < 2:
        return [], None, ""
    lines = [f"  {'sensors':>8}  {'changed ms':>10}  {'us/sensor':>9}  {'unchanged ms':>12}"]
    for n in sorted(timing):
        changed, unchanged = timing[n]["changed"]["median_s"], timing[n]["unchanged"]["median_s"]
        lines.append(f"  {n:>8}  {changed * 1000:>10.2f}  {changed * 1e6 / n:>9.0f}  {unchanged * 1000:>12.2f}")
    low, mid, high = sizes[0], sizes[len(sizes) // 2] if len(sizes) > 2 else sizes[0], sizes[-1]
    per = {n: timing[n]["changed"]["median_s"] * 1e6 / n for n in sizes}

    def marginal(a: int, b: int) -> float:
        return (timing[b]["changed"]["median_s"] - timing[a]["changed"]["median_s"]) * 1e6 / (b - a)

    ok = per[high] <= PER_SENSOR_GROWTH_MAX * per[low]
    detail = (
        f"{per[low]:.0f} us/sensor at {low}, {per[high]:.0f} at {high}: {_up(per[high] / per[low])}x "
        f"(limit {PER_SENSOR_GROWTH_MAX}x)"
    )
    if mid not in (low, high):
        lower, upper = marginal(low, mid), marginal(mid, high)
        lines.append(f"  marginal cost per sensor: {lower:.0f} us ({low}->{mid}), {upper:.0f} us ({mid}->{high})")
        ok = ok and upper <= MARGINAL_GROWTH_MAX * max(lower, 1e-9)
        detail += (
            f"; marginal {lower:.0f} -> {upper:.0f} us/sensor: {_up(upper / max(lower, 1e-9))}x "
            f"(limit {MARGINAL_GROWTH_MAX}x)"
        )
    return lines, ok, detail


def checks(results: dict) -> list[tuple[str, bool | None, str]]:
    """The targets that are not a rate: (label, passed or None when not measured, detail)."""
    cfg = results["config"]
    probe = results.get("probe", {})
    found: list[tuple[str, bool | None, str]] = []
    found.append(("SQL statements per report constant and <= 8 (1..1,000 sensors)", statements_lines(probe)[1], ""))
    _, sensors_ok, sensors_detail = per_sensor_lines(probe, cfg["sensors"])
    found.append(("time per sensor flat from 20 to 1,000 sensors", sensors_ok, sensors_detail))
    memory = results.get("memory_mb") or {}
    peak = max(memory.values(), default=None)
    found.append(
        (
            f"worker memory < {MEMORY_MAX_MB:.0f} MB",
            None if peak is None else peak < MEMORY_MAX_MB,
            "" if peak is None else f"peak RSS {peak:.0f} MB over {len(memory)} workers",
        )
    )
    for key, expected, label in (
        ("unchanged", "unchanged", "unchanged reports answered 'unchanged'"),
        ("changed", "applied", "changed reports answered 'applied'"),
    ):
        phase = results.get("phases", {}).get(key)
        if phase:
            answered = int(phase.get("status", {}).get("200", 0))
            got = phase.get("outcome", {}).get(expected, 0)
            found.append((label, _outcomes_ok(phase, expected), f"{got}/{answered}"))
    return found


def missed(results: dict) -> int:
    """How many targets this run missed (the table's rows and the checks)."""
    verdicts = [r.result for r in rows(results)] + [pass_fail(ok) for _, ok, _ in checks(results)]
    return verdicts.count("FAIL") + realtable.missed(results)


def report_lines(results: dict) -> list[str]:
    """The whole printed verdict: the main table, then the checks that are not a rate, then the details."""
    if not results.get("phases"):  # make bench-soak: the soak alone
        failed = realtable.missed(results)
        return [*realtable.lines(results), "", f"{'soak target missed' if failed else 'soak target met'}"]
    probe = results.get("probe", {})
    table = rows(results)
    lines = format_rows(table)
    lines += realtable.lines(results)
    lines += [
        "  req/s, p50, p99: over HTTP through gunicorn, wrk at saturation (closed loop) except the mix (paced);",
        "  app ms: the same request in-process (Django test client, median), without server or TCP; SQL/req: its",
        "  statements, BEGIN and COMMIT included; xact, writes: transactions and rows written per request as",
        "  PostgreSQL counted them during the run. Liveness writes are coalesced per device: (a) to (c) start with",
        "  every device just seen (the common case, no write due), the mix with last-seen times spread as in a",
        "  steady fleet. Each ratio compares a path with the ceiling runs next to it.",
    ]
    if results.get("seed", {}).get("settings", {}).get("CONN_HEALTH_CHECKS"):
        lines.append(
            "  Not in SQL/req: under gunicorn, CONN_HEALTH_CHECKS adds one SELECT 1 to every request (Django does not "
            "log it)."
        )
    mix = results.get("phases", {}).get("mix")
    if mix:
        lag = mix.get("lag_ms", {})
        late = lag.get("over50", 0)
        lines.append(
            f"  Fleet mix: {mix['requests']:,} answers {dict(sorted(mix.get('status', {}).items()))}, "
            f"{errors(mix)} errors; {late:,} requests started > 50 ms after their slot"
            + (" (the server fell behind the fleet: req/s is its capacity, p50/p99 at saturation)" if late else "")
        )
        if lag.get("n"):
            lines.append(
                f"  Schedule: {mix_late_share(mix):.1%} of requests started > {MIX_P99_MAX_MS:.0f} ms after their slot "
                f"(the target allows {MIX_LATE_MAX:.0%}: their latency as the fleet sees it is at least that), mean "
                f"lateness {lag['sum'] / lag['n']:.0f} ms, max {lag.get('max', 0):.0f} ms."
            )
        after = rps(results.get("phases", {}).get("ceiling_after_mix"))
        served = rps(mix)
        if after and served:
            lines.append(
                f"  The mix served {served / after:.2f} x the framework ceiling measured right after it "
                f"({after:,.0f} req/s)."
            )

    found = checks(results)
    lines += ["", "Checks"]
    for label, ok, detail in found:
        lines.append(f"  {pass_fail(ok):<4}  {label}{f'  ({detail})' if detail else ''}")
    statement_lines, _ = statements_lines(probe)
    if statement_lines:
        lines += ["", "SQL statements per report (BEGIN, COMMIT and SAVEPOINT included, as django_assert_num_queries)"]
        lines += statement_lines
    sensor_lines, _, _ = per_sensor_lines(probe, results["config"]["sensors"])
    if sensor_lines:
        lines += ["", "Time per report through the whole request, in-process (median)"]
        lines += sensor_lines
    verdicts = [r.result for r in table] + [pass_fail(ok) for _, ok, _ in found]
    verdicts += [row[4] for row in realtable.verdicts(results)]
    passed, failed = verdicts.count("PASS"), verdicts.count("FAIL")
    lines += ["", f"{passed} of {passed + failed} targets met" + (f", {failed} missed" if failed else "")]
    return lines
