"""The real agent's part of the printed verdict (``bench.realfleet``'s figures): the independent ceilings both ways,
the per-report costs, the capacity searches and the soak, each target PASS or FAIL. Pure, like ``bench.table``."""

import math

from . import capacity

UNCHANGED_VS_BARE_MIN = 0.60
CHANGED_VS_MINIMAL_MIN = 0.35
METRICS_VS_UNCHANGED_MAX = 1.2
MQTT_VS_HTTP_MAX = 0.25
CAPACITY_HTTP_MIN = 40_000
CAPACITY_MQTT_MIN = 80_000
SOAK_GROWTH_MAX_MB = 5.0


def _mean(values) -> float | None:
    known = [v for v in values if v]
    return sum(known) / len(known) if known else None


def _rps(phase: dict | None) -> float | None:
    if not phase or not phase.get("duration_us"):
        return None
    return phase["requests"] / (phase["duration_us"] / 1e6)


def _down(value: float) -> float:
    return math.floor(round(value * 100, 9)) / 100


def _up(value: float) -> float:
    return math.ceil(round(value * 100, 9)) / 100


Verdict = tuple[str, str, str, str, str]


def verdicts(results: dict) -> list[Verdict]:
    """Rows ``(what, measured, against, target, PASS|FAIL|-)``."""
    real = results.get("real") or {}
    return _framework_rows(results, real) + _database_rows(results, real) + _cost_rows(real) + _capacity_rows(real)


def _framework_rows(results: dict, real: dict) -> list[Verdict]:
    phases = results.get("phases", {})
    found: list[Verdict] = []
    bare = _mean(run.get("rps") for run in real.get("bare", []))
    product = _rps(real.get("product_ceiling"))
    if bare:
        found.append(("framework ceiling, bare", f"{bare:,.0f} req/s", "-", "-", "-"))
        if product:
            found.append(
                ("framework ceiling, product", f"{product:,.0f} req/s", f"{product / bare:.2f} x bare", "-", "-")
            )
        for key, name, minimum in (
            ("poll304", "(a) poll, 304", None),
            ("unchanged", "(c) report unchanged", UNCHANGED_VS_BARE_MIN),
        ):
            served = _rps(phases.get(key))
            if served is None:
                continue
            ratio = served / bare
            ok = "-" if minimum is None else ("PASS" if ratio >= minimum else "FAIL")
            target = "-" if minimum is None else f">= {minimum:.2f}"
            found.append((name, f"{served:,.0f} req/s", f"{_down(ratio):.2f} x bare", target, ok))
    return found


def _database_rows(results: dict, real: dict) -> list[Verdict]:
    found: list[Verdict] = []
    phases = results.get("phases", {})
    minimal = _mean(run.get("tps") for run in real.get("minimal_sql", []) if run.get("ok"))
    changed = _rps(phases.get("changed"))
    if minimal:
        found.append(("database ceiling, minimal SQL", f"{minimal:,.0f} reports/s", "-", "-", "-"))
        replay = results.get("database_ceiling_reports_per_s")
        if replay:
            found.append(
                ("database ceiling, replay", f"{replay:,.0f} reports/s", f"{replay / minimal:.2f} x minimal", "-", "-")
            )
        if changed:
            ratio = changed / minimal
            ok = "PASS" if ratio >= CHANGED_VS_MINIMAL_MIN else "FAIL"
            found.append(
                (
                    "(d) report changed",
                    f"{changed:,.0f} req/s",
                    f"{_down(ratio):.2f} x minimal",
                    f">= {CHANGED_VS_MINIMAL_MIN}",
                    ok,
                )
            )
    return found


def _cost_rows(real: dict) -> list[Verdict]:
    found: list[Verdict] = []
    costs = real.get("costs") or {}
    unchanged = (costs.get("unchanged_http") or {}).get("app_cpu_ms_per_request")
    metrics = (costs.get("metrics_http") or {}).get("app_cpu_ms_per_request")
    mqtt = ((costs.get("unchanged_mqtt") or {}).get("mqtt") or {}).get("ingest_cpu_ms_per_message")
    if unchanged:
        found.append(("unchanged report, HTTP: app CPU", f"{unchanged:.2f} ms", "-", "-", "-"))
        if metrics:
            ratio = metrics / unchanged
            ok = "PASS" if ratio <= METRICS_VS_UNCHANGED_MAX else "FAIL"
            found.append(
                (
                    "metrics-only report, HTTP: app CPU",
                    f"{metrics:.2f} ms",
                    f"{_up(ratio):.2f} x unchanged",
                    f"<= {METRICS_VS_UNCHANGED_MAX}",
                    ok,
                )
            )
        if mqtt:
            ratio = mqtt / unchanged
            ok = "PASS" if ratio <= MQTT_VS_HTTP_MAX else "FAIL"
            found.append(
                (
                    "unchanged report, MQTT: ingest CPU",
                    f"{mqtt:.2f} ms",
                    f"{_up(ratio):.2f} x HTTP",
                    f"<= {MQTT_VS_HTTP_MAX}",
                    ok,
                )
            )
    transport = real.get("transport")
    if transport and transport.get("rate"):
        found.append(
            (
                "MQTT transport ceiling",
                f"{transport['rate']:,.0f} msg/s",
                f"broker {transport['broker_cpu_ms_per_message']:.3f} ms/msg",
                "-",
                "-",
            )
        )
    return found


def _capacity_rows(real: dict) -> list[Verdict]:
    found: list[Verdict] = []
    for key, name, minimum in (
        ("capacity_http", "capacity (a) HTTP only", CAPACITY_HTTP_MIN),
        ("capacity_mqtt", "capacity (b) MQTT reports", CAPACITY_MQTT_MIN),
    ):
        search = real.get(key)
        if search is None:
            continue
        held = search.get("held")
        shown = "none" if held is None else f"{held:,} agents"
        ok = "PASS" if held is not None and held >= minimum else "FAIL"
        limit = " (seeded limit)" if search.get("seeded_limit") else ""
        found.append((name, shown + limit, _limit_of(search), f">= {minimum:,}", ok))
    soak = real.get("soak")
    if soak and soak.get("growth_mb"):
        worst = max(soak["growth_mb"].values())
        ok = "PASS" if worst < SOAK_GROWTH_MAX_MB else "FAIL"
        found.append(
            ("ingest worker RSS, soak", f"{worst:+.1f} MB", "last - first minute", f"< {SOAK_GROWTH_MAX_MB:g} MB", ok)
        )
    return found


def _limit_of(search: dict) -> str:
    """What broke at the smallest size that did not hold."""
    failed = [run for run in search.get("runs", []) if not run.get("held")]
    if not failed:
        return "held at every size tried"
    smallest = min(failed, key=lambda run: run["devices"])
    return f"at {smallest['devices']:,}: {smallest['why']}"


def capacity_lines(results: dict) -> list[str]:
    real = results.get("real") or {}
    cores = (results.get("environment") or {}).get("cores") or 2
    lines = []
    for key, name in (("capacity_http", "(a) HTTP only"), ("capacity_mqtt", "(b) MQTT reports, HTTP polls")):
        search = real.get(key)
        if not search:
            continue
        lines.append(f"  Capacity search {name}:")
        lines.append(
            "    agents  planned/s  sent  p50 ms  p99 ms  errors   late  app ms/req  cpu us/agent/s  backlog s  verdict"
        )
        for run in search.get("runs", []):
            sent = run.get("sent", 0) / run["planned"] if run.get("planned") else 0
            per_agent = run.get("cpu_s_per_agent_second")
            lines.append(
                f"    {run['devices']:>6,}  {run.get('offered_rps', 0):>9,.0f}  {sent:4.0%}  "
                f"{run.get('p50_ms', 0):6.1f}  "
                f"{run.get('p99_ms', 0):6.1f}  {run.get('errors', 0):>6}  {run.get('late', 0):>5}  "
                f"{run.get('app_cpu_ms_per_request', 0):>10.2f}  {(per_agent or 0) * 1e6:>14.1f}  "
                f"{run.get('backlog_s', 0):>9.1f}  {run.get('why')}"
            )
        costs = [r["cpu_s_per_agent_second"] for r in search.get("runs", []) if r.get("cpu_s_per_agent_second")]
        if costs:
            cost = sorted(costs)[len(costs) // 2]
            estimate = capacity.cpu_bound_agents(cost, cores=cores)
            lines.append(
                f"    CPU-bound estimate: {cost * 1e6:.1f} us of server CPU (app, PostgreSQL, ingestion, broker) per "
                f"agent-second (median of the runs) -> {estimate:,} agents on {cores} dedicated cores at "
                f"{capacity.BUSY_MAX:.0%} busy"
            )
    return lines


def lines(results: dict) -> list[str]:
    rows = verdicts(results)
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    heads = ("real agents", "measured", "against", "target", "result")
    widths = [max(w, len(h)) for w, h in zip(widths, heads, strict=True)]
    out = ["", "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return out + capacity_lines(results)


def missed(results: dict) -> int:
    return [row[4] for row in verdicts(results)].count("FAIL")
