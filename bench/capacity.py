"""The capacity search: the largest fleet of real agents one box holds.

A fleet size holds when its 60 s run (``bench.fleet``'s schedule, paced) keeps p99 under ``P99_MAX_MS``, has no
error, and keeps its schedule: at least ``SENT_MIN`` of the planned requests sent, at most ``LATE_MAX`` of them
sent more than ``P99_MAX_MS`` after their time (a late request is a slow answer from the agent's point of view).

The search is pure (a ``measure`` function does the run) so it is tested on a fake machine: from a guess it grows
by ``GROWTH`` while the fleet holds, then bisects between the largest size that held and the smallest that did
not, until they are within ``precision`` of each other or the runs are used up.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

P99_MAX_MS = 250.0
SENT_MIN = 0.99
LATE_MAX = 0.01
GROWTH = 1.5
BUSY_MAX = 0.8  # the share of the cores a box should be busy at its rated fleet (headroom for p99 and bursts)


@dataclass
class Verdict:
    devices: int
    held: bool
    why: str  # what failed, or "held"
    figures: dict = field(default_factory=dict)


def verdict(devices: int, run: dict) -> Verdict:
    """Whether a fleet run (``bench.realfleet.fleet_run``'s figures) held, and if not, what broke first."""
    problems = []
    p99 = run.get("p99_ms")
    if p99 is None or p99 >= P99_MAX_MS:
        problems.append(f"p99 {p99 if p99 is None else round(p99)} ms")
    if run.get("errors", 0):
        problems.append(f"{run['errors']} errors")
    planned = run.get("planned") or 0
    sent = run.get("sent", 0)
    if planned and sent / planned < SENT_MIN:
        problems.append(f"sent {sent / planned:.1%} of planned")
    if planned and run.get("late", 0) / planned > LATE_MAX:
        problems.append(f"{run['late'] / planned:.1%} sent > {P99_MAX_MS:.0f} ms late")
    if run.get("backlog_s", 0) > P99_MAX_MS / 1000:
        problems.append(f"ingestion {run['backlog_s']:.1f} s behind")
    return Verdict(devices, not problems, ", ".join(problems) or "held", run)


def cpu_per_agent_second(run: dict, *, app_s: float, devices: int, duration: float) -> float | None:
    """CPU seconds the server side spent per agent per second of a run: the app (gunicorn), PostgreSQL, and for MQTT
    the ingestion workers and the broker; scaled up when the run sent less than it planned (a fleet that fell
    behind was served only in part). Other processes on the machine are not counted, so this holds on a busy box."""
    mqtt = run.get("mqtt") or {}
    own = app_s + run.get("db_cpu_s", 0.0) + mqtt.get("ingest_cpu_s", 0.0) + mqtt.get("broker_cpu_s", 0.0)
    planned, sent = run.get("planned") or 0, run.get("sent") or 0
    if not planned or not sent or own <= 0:
        return None
    return own / (devices * duration * (sent / planned))


def cpu_bound_agents(cpu_per_agent_second: float | None, *, cores: int, busy: float = BUSY_MAX) -> int | None:
    """How many agents ``cores`` dedicated cores would hold at ``busy`` utilization, from the measured CPU cost."""
    if not cpu_per_agent_second:
        return None
    return int(cores * busy / cpu_per_agent_second)


def search(
    measure: Callable[[int], Verdict],
    *,
    start: int,
    maximum: int,
    runs: int,
    precision: float = 0.1,
    minimum: int = 100,
) -> tuple[int | None, list[Verdict]]:
    """The largest size that held (None: not even the smallest tried) and every run, in order."""
    done: list[Verdict] = []
    held: int | None = None
    failed: int | None = None
    size = max(minimum, min(start, maximum))
    while len(done) < runs:
        result = measure(size)
        done.append(result)
        if result.held:
            held = size if held is None else max(held, size)
        else:
            failed = size if failed is None else min(failed, size)
        if failed is None:
            if size >= maximum:
                break
            size = min(maximum, int(size * GROWTH))
        elif held is None:
            if size <= minimum:
                break
            size = max(minimum, int(size / GROWTH))
        else:
            if failed <= held * (1 + precision):
                break
            size = (held + failed) // 2
    return held, done
