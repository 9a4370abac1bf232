"""How each sensor row's status is decided (SPEC section 6). Pure: plain data in, plain data out.

The read model is a function of (target state, last accepted report) plus the previous rows, which only carry
history forward (``deployment_attempts``, ``last_deployed_at``, ``status_changed_at``). Deciding twice from
the same inputs changes nothing, which is what makes rebuilding and ``--check`` possible.
"""

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.choices import EventTypeChoices
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.validation import POLL_INTERVAL_DEFAULT, sensors_differences, unreported_fields

_UNNAMED_SENSORS = uuid.UUID("5b1c8f0e-6a43-4c55-9d0b-2f3e7a9c1d44")


@dataclass(frozen=True, slots=True)
class SensorRow:
    """One ``DeviceSensor`` row, as the decision sees it."""

    name: str
    sensor_id: str
    protocol: str
    enabled: bool
    poll_interval: int
    connection: dict
    data_points: list
    metadata: dict
    config_version: int
    synced_to_config: bool
    deployment_status: str
    running: bool
    last_deployed_at: datetime | None
    deployment_error: str
    deployment_attempts: int
    failed_at_version: int | None
    status_changed_at: datetime
    desired: dict | None
    unreported_fields: list[str]
    health_status: str
    connected: bool | None
    communication_quality: str
    health_error: str
    health_error_count: int | None
    health_last_seen: datetime | None
    health_changed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Decision:
    target_version: int
    reported_version: int | None
    rows: dict[str, SensorRow]
    removed: list[str]
    events: list[tuple[str, dict]]
    in_sync: bool
    drifting: list[str]
    drift_changed: bool


# What a running sensor shows for a field its agent did not report, when no desired value stands in for it.
_UNREPORTED_DEFAULTS = {"enabled": True, "pollInterval": POLL_INTERVAL_DEFAULT, "connection": {}, "dataPoints": []}


def _shown(sensor: dict, *, version: int, fallback: dict | None = None) -> dict:
    """The row's configuration columns from a sensor object; a field the agent left out (None) shows the desired
    value (``fallback``), else a default, and is listed in the row's ``unreported_fields``."""

    def value(key: str) -> Any:
        if sensor[key] is not None:
            return sensor[key]
        return fallback[key] if fallback is not None else _UNREPORTED_DEFAULTS[key]

    return {
        "sensor_id": sensor["id"],
        "protocol": sensor["protocol"],
        "enabled": value("enabled"),
        "poll_interval": value("pollInterval"),
        "connection": value("connection"),
        "data_points": value("dataPoints"),
        "metadata": sensor["metadata"],
        "config_version": version,
    }


def _health_error(health: Mapping, name: str) -> str:
    """The adapter's own error for a sensor that is not online, as its agent reported it."""
    entry = health.get(name)
    if entry and entry["status"] != "online" and entry["lastError"]:
        return entry["lastError"]
    return ""


_NO_HEALTH = {"status": "", "connected": None, "quality": "", "lastError": "", "lastSeen": None, "errorCount": None}


def _health_columns(entry: Mapping | None, prev: "SensorRow | None", now: datetime) -> dict:
    """The row's health columns from the sensor's normalized health entry (``agent_protocol``), or none."""
    entry = entry or _NO_HEALTH
    last_seen = entry["lastSeen"]
    columns = {
        "health_status": entry["status"],
        "connected": entry["connected"],
        "communication_quality": entry["quality"],
        "health_error": entry["lastError"],
        "health_error_count": entry["errorCount"],
        "health_last_seen": datetime.fromisoformat(last_seen) if last_seen else None,
    }
    if prev is not None and (prev.health_status, prev.connected) == (entry["status"], entry["connected"]):
        columns["health_changed_at"] = prev.health_changed_at
    else:
        columns["health_changed_at"] = now if entry["status"] else None
    return columns


def _decide_one(
    name: str,
    d: dict | None,
    r: dict | None,
    *,
    target_version: int,
    reported_version: int | None,
    health: Mapping,
) -> tuple[str, bool, dict, str]:
    """(status, running, shown fields, error) for one name, straight from the SPEC table."""
    applied = reported_version is not None and reported_version >= target_version
    T, V = target_version, reported_version
    # Both agents list a disabled sensor among the ones they have, with enabled false: configured, not running.
    runs = r is not None and r["enabled"] is not False
    if d is not None and r is not None:
        assert V is not None  # a report that lists sensors has a version: a queued one (none) is never decided
        shown = _shown(r, version=V, fallback=d)
        shown["sensor_id"] = d["id"]
        differences = sensors_differences(d, r)
        if not differences:
            return Status.DEPLOYED, runs, shown, ""
        if not applied:
            return Status.RECONCILING, runs, shown, ""
        error = f"Running a configuration that differs from target version {T} in: {', '.join(differences)}."
        adapter_error = _health_error(health, name)
        return Status.FAILED, runs, shown, f"{error} {adapter_error}" if adapter_error else error
    if d is not None:
        shown = _shown(d, version=T)
        if not applied:
            return Status.PENDING, False, shown, ""
        if not d["enabled"]:
            return Status.DEPLOYED, False, shown, ""
        error = _health_error(health, name) or f"Not running on the device although enabled in target version {T}."
        return Status.FAILED, False, shown, error
    assert r is not None and V is not None
    shown = _shown(r, version=V)
    if not applied:
        return Status.RECONCILING, runs, shown, ""
    state = "running" if runs else "configured (disabled)"
    return Status.FAILED, runs, shown, f"Still {state} although removed from target version {T}."


def retry_budget_reason(*, failed_applies: int, version: int) -> str:
    """What a failed row of a device whose retry budget ran out at ``version`` says first."""
    applies = "failed apply" if failed_applies == 1 else "failed applies"
    return (
        f"Retry budget exhausted: {failed_applies} {applies} of target version {version}; not retried until staff "
        "act (a new target version, or a reset of the budget)."
    )


def decide(
    *,
    target_version: int,
    desired: Iterable[dict],
    reported_version: int | None,
    running: Iterable[dict],
    sensor_health: Mapping,
    existing: Mapping[str, SensorRow],
    was_in_sync: bool,
    now: datetime,
    retry_exhausted_after: int | None = None,
) -> Decision:
    """Project target and report into rows. ``desired`` and ``running`` are normalized sensor objects (wire
    format, ``id`` set on desired ones, None for a field the agent did not report); ``sensor_health`` maps sensor
    names to normalized health entries; ``reported_version`` is None when the device never reported.
    ``retry_exhausted_after``: the failed applies after which the retry budget ran out at the target version (its
    failed rows say so first), or None."""
    desired_by_name = {s["name"]: s for s in desired}
    running_by_name = {s["name"]: s for s in running}
    names = list(desired_by_name) + [n for n in running_by_name if n not in desired_by_name]

    rows: dict[str, SensorRow] = {}
    events: list[tuple[str, dict]] = []
    for name in names:
        d, r = desired_by_name.get(name), running_by_name.get(name)
        status, is_running, shown, error = _decide_one(
            name, d, r, target_version=target_version, reported_version=reported_version, health=sensor_health
        )
        if status == Status.FAILED and retry_exhausted_after is not None:
            error = f"{retry_budget_reason(failed_applies=retry_exhausted_after, version=target_version)} {error}"
        prev = existing.get(name)
        if not shown["sensor_id"]:
            # A running sensor reported without an id keeps its row's id; a new one gets an id derived from its
            # name, so that deciding again from the same inputs gives the same row.
            shown["sensor_id"] = prev.sensor_id if prev else str(uuid.uuid5(_UNNAMED_SENSORS, name))
        attempts = prev.deployment_attempts if prev else 0
        failed_at = prev.failed_at_version if prev else None
        if status == Status.DEPLOYED:
            attempts, failed_at = 0, None
        elif status == Status.FAILED and failed_at != reported_version:
            attempts, failed_at = attempts + 1, reported_version
        status_changed = prev is None or prev.deployment_status != status
        row = SensorRow(
            name=name,
            **shown,
            synced_to_config=status == Status.DEPLOYED,
            deployment_status=status,
            running=is_running,
            last_deployed_at=(
                now if status == Status.DEPLOYED and status_changed else (prev.last_deployed_at if prev else None)
            ),
            deployment_error=error,
            deployment_attempts=attempts,
            failed_at_version=failed_at,
            status_changed_at=prev.status_changed_at if prev is not None and not status_changed else now,
            desired=d,
            unreported_fields=unreported_fields(r) if r is not None else [],
            **_health_columns(sensor_health.get(name), prev, now),
        )
        rows[name] = row
        if status == Status.DEPLOYED and status_changed:
            events.append((EventTypeChoices.SENSOR_DEPLOYED, {"name": name, "version": reported_version}))
        elif status == Status.FAILED and (status_changed or (prev and prev.failed_at_version != failed_at)):
            events.append(
                (
                    EventTypeChoices.SENSOR_FAILED,
                    {"name": name, "version": reported_version, "error": error, "attempts": attempts},
                )
            )

    removed = [name for name in existing if name not in rows]
    drifting = sorted(name for name, row in rows.items() if row.deployment_status != Status.DEPLOYED)
    in_sync = reported_version == target_version and not drifting
    was_drifting = sorted(name for name, row in existing.items() if row.deployment_status != Status.DEPLOYED)
    drift_changed = (in_sync and not was_in_sync) or (not in_sync and (was_in_sync or drifting != was_drifting))
    if drift_changed and in_sync:
        events.append(
            (
                EventTypeChoices.DEVICE_IN_SYNC,
                {"target_version": target_version, "reported_version": reported_version},
            )
        )
    elif drift_changed:
        events.append(
            (
                EventTypeChoices.DEVICE_CONFIG_DRIFT,
                {
                    "target_version": target_version,
                    "reported_version": reported_version,
                    "drifting_sensors": [
                        {"name": n, "status": rows[n].deployment_status, "error": rows[n].deployment_error}
                        for n in drifting
                    ],
                },
            )
        )
    return Decision(
        target_version=target_version,
        reported_version=reported_version,
        rows=rows,
        removed=removed,
        events=events,
        in_sync=in_sync,
        drifting=drifting,
        drift_changed=drift_changed,
    )
