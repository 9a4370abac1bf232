"""The database ceiling: the statements of changed reports, as the app sent them, replayed by pgbench.

``bench.prepare probe`` captures every statement of real changed reports with its parameters (Django's
``execute_wrapper``; BEGIN and COMMIT from Django's query log), each parameter written as an SQL literal by
psycopg, and a value that must differ on every execution as ``gen_random_uuid()`` (a new event's uuid). Each
pgbench script holds the captured reports of a few devices (variant 1, then back to variant 0 for each), so every
run of a script is real updates of the same rows, whatever order pgbench picks scripts in. Statements outside the
captured BEGIN/COMMIT (the key lookup) run on their own, as in the app.

pgbench sends them with the simple protocol, every parameter written in. That is the same work for PostgreSQL as
the app's prepared statements, measured (``make bench`` prints both): 2.1 ms of PostgreSQL CPU per replayed
report against 2.15 ms per changed report of the app. The two alternatives were not: a prepared replay of the
literal statements folds each report's JSON into the plan, so PostgreSQL parses it once per connection instead
of once per report (the "ceiling" tripled); binding the JSON through pgbench variables (``\\gset``) cost pgbench
itself 2.4 ms per report, more than the statements.

A colon inside a string literal is written ``\\x3a`` in an ``E''`` string: the same value, but pgbench no longer
reads ``"enabled":true`` as a reference to a variable ``true``.
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MAX_SCRIPTS = 128  # pgbench's limit on -f


def _string_end(sql: str, i: int, escaped: bool) -> int:
    """Index of the quote that closes the string literal whose opening quote is at ``i``."""
    i += 1
    while True:
        if escaped and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == "'":
            if i + 1 < len(sql) and sql[i + 1] == "'":
                i += 2
                continue
            return i
        i += 1


def colons_hidden(sql: str) -> str:
    """``sql`` with every colon inside a string literal written as the escape ``\\x3a`` (the same value)."""
    out: list[str] = []
    i = start = 0
    while (i := sql.find("'", i)) != -1:
        escaped = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
        end = _string_end(sql, i, escaped)
        body = sql[i + 1 : end]
        if ":" in body:
            if escaped:
                out.append(sql[start:i])
            else:
                out.append(sql[start:i] + "E")
                body = body.replace("\\", "\\\\")
            out.append("'" + body.replace(":", "\\x3a") + "'")
            start = end + 1
        i = end + 1
    out.append(sql[start:])
    return "".join(out)


def _placeholders(sql: str) -> list[str]:
    """``sql`` split at its ``%s`` placeholders (psycopg's format: ``%%`` is a literal ``%``)."""
    parts, current, i = [], [], 0
    while i < len(sql):
        if sql.startswith("%%", i):
            current.append("%")
            i += 2
        elif sql.startswith("%s", i):
            parts.append("".join(current))
            current = []
            i += 2
        else:
            current.append(sql[i])
            i += 1
    parts.append("".join(current))
    return parts


@dataclass
class Script:
    text: str
    reports: int  # changed reports per run of the script


def statement_line(sql: str, params: list[str] | None) -> str:
    """One captured statement as a script line, every parameter written in (as client-side binding does)."""
    sql = sql.strip().rstrip(";")
    if params is None:  # transaction control, or a statement that ran without parameters
        return colons_hidden(sql) + ";"
    parts = _placeholders(sql)
    if len(parts) != len(params) + 1:
        raise ValueError(f"{len(params)} parameters for {len(parts) - 1} placeholders: {sql[:120]}")
    text = [parts[0]]
    for literal, after in zip(params, parts[1:], strict=True):
        text += [literal, after]
    return colons_hidden("".join(text)) + ";"


def replay_script(reports: list[list[dict]]) -> Script:
    """One pgbench script from captured reports, each a list of ``{"sql": ..., "params": [literal, ...] | None}``."""
    lines = [
        statement_line(statement["sql"], statement["params"]) for statements in reports for statement in statements
    ]
    return Script("\n".join(lines) + "\n", reports=len(reports))


def scripts_write(scripts: list[Script], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("report_*.sql"):
        old.unlink()
    paths = []
    for n, script in enumerate(scripts[:MAX_SCRIPTS], start=1):
        path = directory / f"report_{n:03d}.sql"
        path.write_text(script.text, encoding="utf-8")
        paths.append(path)
    return paths


MINIMAL_SCRIPT = """\\set device random(:first_device, :last_device)
\\set variant random(0, 1000000)
BEGIN;
UPDATE {state} SET config = jsonb_set(config, '{{benchMinimal}}', to_jsonb(:variant)), digest = md5(:variant::text),
  reported_at = now(), seq = coalesce(seq, 0) + 1 WHERE device_id = :device RETURNING seq AS event_seq
\\gset
INSERT INTO {sensors} AS s ({columns}) SELECT {values} FROM {sensors} WHERE device_id = :device
  ON CONFLICT (device_id, name) DO UPDATE SET metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at;
INSERT INTO {events} (event_id, type, aggregate_type, aggregate_id, sequence, data, metadata, correlation_id,
  created_at) VALUES (gen_random_uuid(), 'device.state_reported', 'device', :device::text,
  :event_seq + {sequence_offset}, '{{"sensors": {sensor_count}, "changed": {sensor_count}}}', '{{}}',
  gen_random_uuid(), now());
COMMIT;
"""
SEQUENCE_OFFSET = 1_000_000  # the replayed events' sequences start here: above any the seed or the app wrote


def minimal_script(*, state: str, sensors: str, events: str, sensor_columns: list[str], sensor_count: int) -> str:
    """The least SQL a changed report of ``sensor_count`` sensors needs, whatever the product does: one update of
    the device's state row (which also hands out the device's next event sequence, as a lock on the device must),
    one upsert of its sensor rows (every column written, each row's ``metadata`` new), one event insert, in one
    transaction. pgbench draws the device among ``first_device..last_device`` (``-D``).

    The independent database ceiling: the product's own statements (``replay_script``) cannot show SQL the
    product need not run; this can."""
    values = []
    for column in sensor_columns:
        if column == "metadata":
            values.append("jsonb_build_object('benchVariant', :variant)")
        elif column == "updated_at":
            values.append("now()")
        else:
            values.append(column)
    return MINIMAL_SCRIPT.format(
        state=state,
        sensors=sensors,
        events=events,
        columns=", ".join(sensor_columns),
        values=", ".join(values),
        sensor_count=sensor_count,
        sequence_offset=SEQUENCE_OFFSET,
    )


@dataclass
class PgbenchResult:
    tps: float | None
    transactions: int | None
    failed: int | None
    latency_ms: float | None
    ok: bool
    output: str


def run(
    scripts: list[Path],
    *,
    dsn: dict[str, str],
    clients: int,
    threads: int,
    duration: int,
    timeout: int,
    defines: dict[str, str] | None = None,
) -> PgbenchResult:
    command = [
        "pgbench",
        "--no-vacuum",
        "--protocol=simple",
        f"--client={clients}",
        f"--jobs={threads}",
        f"--time={duration}",
        f"--host={dsn['host']}",
        f"--port={dsn['port']}",
        f"--username={dsn['user']}",
    ]
    for name, value in (defines or {}).items():
        command.append(f"--define={name}={value}")
    for script in scripts:
        command.append(f"--file={script}")
    command.append(dsn["dbname"])
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    return result_parse(completed.stdout + completed.stderr, returncode=completed.returncode)


def result_parse(output: str, *, returncode: int = 0) -> PgbenchResult:
    def number(pattern: str, cast=float):
        match = re.search(pattern, output)
        return cast(match.group(1)) if match else None

    tps = number(r"tps = ([0-9.]+) \(without initial connection time\)")
    transactions = number(r"number of transactions actually processed: (\d+)", int)
    failed = number(r"number of failed transactions: (\d+)", int)
    latency = number(r"latency average = ([0-9.]+) ms")
    aborted = "aborted" in output or "ERROR" in output
    ok = returncode == 0 and tps is not None and not aborted and not failed
    return PgbenchResult(tps, transactions, failed, latency, ok, output)
