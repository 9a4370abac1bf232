"""CPU time spent by the app server and by PostgreSQL during a load phase, read from ``/proc``.

Throughput at saturation on a shared 2-core machine says how fast, CPU time per request says where the time goes:
the gunicorn workers (the app: Django, the product's code, psycopg) or the PostgreSQL processes (the database's
share, also what the database ceiling measures). A process's own time is ``utime + stime``; processes that ended
during the phase (PostgreSQL backends the benchmark closes between phases, a restarted worker) count through their
parent's ``cutime + cstime`` once reaped, so a group's total is its live processes plus its root's children.
"""

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcTimes:
    pid: int
    ppid: int
    comm: str
    own: float  # seconds, utime + stime
    children: float  # seconds, cutime + cstime of reaped children


def _read(pid: int) -> ProcTimes | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may hold spaces; the fields after it are space-separated.
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ProcTimes(pid, ppid, comm, (utime + stime) / TICKS, (cutime + cstime) / TICKS)


def _all() -> list[ProcTimes]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            times = _read(int(entry))
            if times is not None:
                found.append(times)
    return found


def group_seconds(processes: list[ProcTimes], root_pid: int) -> float:
    """CPU seconds of ``root_pid`` and every descendant, live or reaped."""
    by_parent: dict[int, list[ProcTimes]] = {}
    root = None
    for p in processes:
        by_parent.setdefault(p.ppid, []).append(p)
        if p.pid == root_pid:
            root = p
    if root is None:
        return 0.0
    total, stack = root.own + root.children, [root_pid]
    while stack:
        for child in by_parent.get(stack.pop(), []):
            total += child.own
            stack.append(child.pid)
    return total


def postmaster_pid(processes: list[ProcTimes]) -> int | None:
    """The PostgreSQL server process: a ``postgres`` process whose parent is not one."""
    pids = {p.pid for p in processes if p.comm == "postgres"}
    for p in processes:
        if p.comm == "postgres" and p.ppid not in pids:
            return p.pid
    return None


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core), from the first line of ``/proc/stat``."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICKS


def snapshot(app_pid: int | None) -> dict[str, float]:
    processes = _all()
    db_pid = postmaster_pid(processes)
    return {
        "app": group_seconds(processes, app_pid) if app_pid else 0.0,
        "db": group_seconds(processes, db_pid) if db_pid else 0.0,
        "machine": machine_busy_seconds(),
    }


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: float) -> dict[str, float] | None:
    if not requests:
        return None
    return {key: (after[key] - before[key]) * 1000 / requests for key in before}
