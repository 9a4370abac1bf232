"""The database ceiling: the statements of changed reports, as the app sent them, replayed by pgbench.

``bench.prepare probe`` captures every statement of real changed reports with its parameters (Django's
``execute_wrapper``; BEGIN and COMMIT from Django's query log), each parameter already written as an SQL literal
by psycopg. Each pgbench script holds the captured reports of some devices (variant 1, then back to variant 0 for
each), so every run of a script is real updates of the same rows, whatever order pgbench picks scripts in.

pgbench speaks the protocol the app's connection does. With ``--protocol=prepared`` (the app prepares its
statements) parameters stay parameters: a statement's small ones (numbers, short strings, NULL) are written into
it; each long one (the report's JSON, the sensor rows' JSON) is read into a pgbench variable by one ``SELECT`` of
their text at the start of the script (``\\gset``) and passed as ``:variable``, which pgbench sends as a bound
parameter, as psycopg does: PostgreSQL parses the JSON on every execution, where a literal would be folded into
the prepared plan once. With ``--protocol=simple`` (client-side binding) every parameter is written into its
statement, as psycopg then does. A value that must differ on every execution is captured as
``gen_random_uuid()`` (a new event's uuid).

A colon inside a string literal is written ``\\x3a`` in an ``E''`` string: the same value, but pgbench no longer
reads ``"enabled":true`` as a reference to a variable ``true``. Statements outside the captured BEGIN/COMMIT (the
key lookup) run on their own, as in the app.
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MAX_SCRIPTS = 128  # pgbench's limit on -f
VARIABLE_PREFIX = "bench_"
INLINE_MAX = 64  # a parameter literal longer than this is passed as a bound parameter
_CAST = re.compile(r"::[\w ]+$")


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


def statement_line(sql: str, params: list[str] | None, *, variables: list[str], bind: bool) -> str:
    """One captured statement as a script line. With ``bind``, each long parameter becomes a variable (its
    ``SELECT`` column appended to ``variables``); without, every parameter is written in (client-side binding)."""
    sql = sql.strip().rstrip(";")
    if params is None:  # transaction control, or a statement that ran without parameters
        return colons_hidden(sql) + ";"
    parts = _placeholders(sql)
    if len(parts) != len(params) + 1:
        raise ValueError(f"{len(params)} parameters for {len(parts) - 1} placeholders: {sql[:120]}")
    text = [parts[0]]
    for literal, after in zip(params, parts[1:], strict=True):
        if not bind or len(literal) <= INLINE_MAX:
            text.append(literal)
        else:
            name = f"p{len(variables) + 1}"
            variables.append(f"{_CAST.sub('', literal)} AS {name}")  # its text: a cast would make PostgreSQL print it
            text.append(f":{VARIABLE_PREFIX}{name}")
        text.append(after)
    return colons_hidden("".join(text)) + ";"


def replay_script(reports: list[list[dict]], *, protocol: str) -> Script:
    """One pgbench script from captured reports, each a list of ``{"sql": ..., "params": [literal, ...] | None}``,
    for pgbench's ``protocol``: ``prepared`` binds the long parameters, read into variables by one ``SELECT`` at
    the start of the script (one round trip per run of ~30 reports); ``simple`` writes every parameter in."""
    lines: list[str] = []
    variables: list[str] = []
    for statements in reports:
        for statement in statements:
            lines.append(
                statement_line(statement["sql"], statement["params"], variables=variables, bind=protocol == "prepared")
            )
    if variables:
        lines.insert(0, colons_hidden(f"SELECT {', '.join(variables)}") + f" \\gset {VARIABLE_PREFIX}")
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
