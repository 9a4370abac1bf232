"""The database ceiling: the SQL of changed reports, exactly as the app sent it, replayed by pgbench.

``bench.prepare probe`` captures every statement of real changed reports (``connection.queries``; psycopg 3
interpolates the parameters, and Django logs BEGIN, SAVEPOINT and COMMIT too). Each pgbench script holds one
device's two captured reports (variant 1, then back to variant 0), so every run of a script is two real updates
of the same rows, whatever order pgbench picks scripts in. Every statement is kept; only values that must differ
on every execution are rewritten:

- a UUID literal in a unique UUID column (``Event.event_id``) becomes ``gen_random_uuid()``;
- a literal per-aggregate ``sequence`` that the app computed from a ``SELECT MAX(...)`` just before is taken
  from that query's result (``\\gset``), as the app does;
- a colon inside a string literal is written ``\\x3a`` in an ``E''`` string: the same value, but pgbench no
  longer reads ``"enabled":true`` as a reference to a variable ``true`` (which, with ``--protocol=prepared``, it
  would replace by a parameter).

Statements outside the captured BEGIN/COMMIT (the key lookup) run on their own, as in the app. pgbench speaks
the protocol the app's connection does: prepared statements when the server's settings prepare them.
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MAX_SCRIPTS = 128  # pgbench's limit on -f
GSET_PREFIX = "bench_"
_INSERT = re.compile(r'^INSERT INTO "(?P<table>\w+)" \((?P<columns>[^)]*)\) VALUES ', re.S)
_MAX = re.compile(r'^SELECT MAX\("(?P<table>\w+)"\."(?P<column>\w+)"\) AS "(?P<alias>\w+)" FROM "(?P=table)"')
_UUID_LITERAL = re.compile(r"^'[0-9a-fA-F-]{32,36}'(::uuid)?$")


class SQLShapeError(ValueError):
    """A statement this converter cannot take apart."""


def _scan_item_end(sql: str, i: int) -> int:
    """Index of the comma or closing parenthesis that ends the value starting at ``i`` (top level of a tuple)."""
    depth = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            escaped = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            i += 1
            while i < n:
                if escaped and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if i + 1 < n and sql[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
        elif c == '"':
            i = sql.index('"', i + 1)
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                return i
            depth -= 1
        elif c == "," and depth == 0:
            return i
        i += 1
    raise SQLShapeError("unterminated VALUES tuple")


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


def values_split(sql: str) -> tuple[str, list[str], list[list[str]], str]:
    """``INSERT INTO "t" (cols) VALUES (...), (...) <rest>`` as (table, columns, rows of value texts, rest)."""
    match = _INSERT.match(sql)
    if match is None:
        raise SQLShapeError("not an INSERT ... VALUES statement")
    columns = [c.strip().strip('"') for c in match["columns"].split(",")]
    rows: list[list[str]] = []
    i = match.end()
    while True:
        if sql[i] != "(":
            raise SQLShapeError(f"expected '(' at {i}")
        i += 1
        row = []
        while True:
            end = _scan_item_end(sql, i)
            row.append(sql[i:end].strip())
            i = end + 1
            if sql[end] == ")":
                break
        if len(row) != len(columns):
            raise SQLShapeError(f"{len(row)} values for {len(columns)} columns")
        rows.append(row)
        j = i
        while j < len(sql) and sql[j].isspace():
            j += 1
        if j < len(sql) and sql[j] == ",":
            i = j + 1
            while sql[i].isspace():
                i += 1
            continue
        return match["table"], columns, rows, sql[i:]


def values_join(table: str, columns: list[str], rows: list[list[str]], rest: str) -> str:
    quoted = ", ".join(f'"{c}"' for c in columns)
    head = f'INSERT INTO "{table}" ({quoted}) VALUES '
    return head + ", ".join("(" + ", ".join(row) + ")" for row in rows) + rest


@dataclass
class Script:
    text: str
    reports: int  # changed reports per run of the script


def replay_script(reports: list[list[str]], *, unique_uuid_columns: dict[str, list[str]]) -> Script:
    """One pgbench script from the captured statements of consecutive reports of one device."""
    lines: list[str] = []
    for statements in reports:
        gsets: dict[tuple[str, str], str] = {}  # (table, column) -> variable holding the MAX the app read
        for sql in statements:
            sql = sql.strip().rstrip(";")
            max_query = _MAX.match(sql)
            if max_query:
                gsets[(max_query["table"], max_query["column"])] = GSET_PREFIX + max_query["alias"]
                lines.append(f"{colons_hidden(sql)} \\gset {GSET_PREFIX}")
                continue
            if sql.startswith("INSERT INTO "):
                sql = _insert_rewrite(sql, unique_uuid_columns=unique_uuid_columns, gsets=gsets)
            lines.append(colons_hidden(sql) + ";")
    return Script("\n".join(lines) + "\n", reports=len(reports))


def _insert_rewrite(sql: str, *, unique_uuid_columns: dict[str, list[str]], gsets: dict[tuple[str, str], str]) -> str:
    table = sql[len('INSERT INTO "') :].split('"', 1)[0]
    fresh = set(unique_uuid_columns.get(table, ()))
    counted = {column: var for (t, column), var in gsets.items() if t == table}
    if not fresh and not counted:
        return sql
    try:
        table, columns, rows, rest = values_split(sql)
    except SQLShapeError:
        return sql  # INSERT ... SELECT (bulk upserts): nothing unique to rewrite there
    for index, column in enumerate(columns):
        if column in fresh:
            for row in rows:
                if _UUID_LITERAL.match(row[index]):
                    row[index] = "gen_random_uuid()"
        elif column in counted and all(row[index].isdigit() for row in rows):
            first = min(int(row[index]) for row in rows)
            for row in rows:
                row[index] = f"(COALESCE(:{counted[column]}, 0) + {int(row[index]) - first + 1})"
    return values_join(table, columns, rows, rest)


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
    protocol: str = "simple",
) -> PgbenchResult:
    """``protocol``: ``simple`` (a statement is parsed and planned on every run, as with client-side binding) or
    ``prepared`` (planned once per connection, as psycopg's prepared statements do)."""
    command = [
        "pgbench",
        "--no-vacuum",
        f"--protocol={protocol}",
        f"--client={clients}",
        f"--jobs={threads}",
        f"--time={duration}",
        f"--host={dsn['host']}",
        f"--port={dsn['port']}",
        f"--username={dsn['user']}",
    ]
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
