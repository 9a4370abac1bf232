"""Reads of the reconciliation loop: a device's rows as the decision sees them and the projection its stored
states imply, why a device drifts, drift episodes and their statistics, and the fleet's counts."""

import math
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from devices.labels import Selector
from devices.models import Device, DeviceCurrentState, DeviceTargetState
from devices.target_config import config_sensors
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.choices import DeviceSensorHealthStatusChoices as Health
from sensors.choices import DeviceSensorProtocolChoices
from sensors.models import DeviceSensor
from sensorsync_project.hot_queries import KeyedRows

from .agent_protocol import health_merge
from .decision import Decision, SensorRow, decide
from .models import DriftEpisode

ROW_FIELDS = tuple(SensorRow.__dataclass_fields__)
ALL_DEVICES = Selector()  # the fleet selectors' default: every device

# What reconciliation reads of a device's rows: the decision's fields, as plain values (no model instances on the
# hot path), in one query written once per process.
_DEVICE_ROWS = KeyedRows(DeviceSensor, key="device", fields=ROW_FIELDS)
_SENSOR_ID = ROW_FIELDS.index("sensor_id")


def sensor_rows_read(*, device_id: int) -> dict[str, SensorRow]:
    """A device's sensor rows by name, in one query."""
    found = {}
    for values in _DEVICE_ROWS.rows(device_id):
        fields = list(values)
        fields[_SENSOR_ID] = str(fields[_SENSOR_ID])
        row = SensorRow(*fields)
        found[row.name] = row
    return found


def row_from_model(sensor: DeviceSensor) -> SensorRow:
    values = {name: getattr(sensor, name) for name in ROW_FIELDS}
    values["sensor_id"] = str(values["sensor_id"])
    return SensorRow(**values)


def decide_for_device(
    *, target: DeviceTargetState, current: DeviceCurrentState | None, existing: dict[str, SensorRow]
) -> Decision:
    """What reconciliation makes of a device's stored target and last report, given its rows (``existing``): the
    decision, not yet written (``reconciliation.services.projection`` writes it)."""
    return decide(
        target_version=target.version,
        desired=config_sensors(target.config),
        reported_version=current.version if current else None,
        running=config_sensors(current.config) if current else [],
        sensor_health=health_merge(current.sensor_health) if current else {},
        existing=existing,
        was_in_sync=not target.needs_deployment,
        now=timezone.now(),
        retry_exhausted_after=target.failed_applies if target.retry_exhausted else None,
    )


def drift_explain(*, device: Device) -> dict:
    """Why a device is not converged, in the order a person would check: fetched? applied? which sensors?"""
    target = device.target_state
    current = device.current_state_or_none()
    fetched, applied = device.last_fetched_version, current.version if current else None
    drifting, offline = drift_explanation_sensors(device=device)
    if applied == target.version and not target.needs_deployment:
        stage, reason = "in_sync", "The agent runs target version {t} exactly."
    elif applied is not None and applied >= target.version:
        stage, reason = "sensors_failed", "The agent applied version {a}, but some sensors do not run as desired."
    elif fetched is None:
        stage, reason = "never_fetched", "The agent has never fetched its target state."
    elif fetched < target.version:
        stage, reason = (
            "not_fetched",
            "The agent last fetched version {f}; target version {t} is waiting for its next poll.",
        )
    elif current is None:
        stage, reason = "never_reported", "The agent fetched version {f} but has never reported what it runs."
    else:
        stage, reason = "not_applied", "The agent fetched version {f} but still reports running version {a}."
    reason = reason.format(t=target.version, f=fetched, a=applied)
    if target.retry_exhausted_at is not None:
        reason += " " + retry_exhausted_explain(target=target)
    return {
        "deviceUuid": str(device.uuid),
        "inSync": stage == "in_sync",
        "stage": stage,
        "reason": reason,
        "targetVersion": target.version,
        "targetUpdatedAt": target.updated_at,
        "lastFetchedVersion": fetched,
        "lastFetchedAt": device.last_fetched_at,
        "reportedVersion": applied,
        "lastReportedAt": current.reported_at if current else None,
        "lastSeenAt": device.last_seen_at,
        "sensors": [_drift_sensor(row) for row in drifting],
        "deployedOfflineSensors": [_drift_sensor(row) for row in offline],
    }


def retry_exhausted_explain(*, target: DeviceTargetState) -> str:
    """What an operator reads of a device whose retry budget ran out: at which version, and what happened since."""
    version = target.retry_exhausted_version
    text = f"Its retry budget ran out at target version {version}: it is not retried there until staff act"
    if target.retry_fallback_version is not None:
        return f"{text}; it fell back to the last version it fully deployed (as v{target.retry_fallback_version})."
    return f"{text} (a new target version, or a reset of the budget)."


def _drift_sensor(row: DeviceSensor) -> dict:
    return {
        "name": row.name,
        "deploymentStatus": row.deployment_status,
        "running": row.running,
        "deploymentError": row.deployment_error,
        "deploymentAttempts": row.deployment_attempts,
        "configVersion": row.config_version,
        "statusChangedAt": row.status_changed_at,
        "healthStatus": row.health_status,
        "healthError": row.health_error,
        "healthErrorCount": row.health_error_count,
        "healthLastSeen": row.health_last_seen,
        "healthChangedAt": row.health_changed_at,
    }


def drift_explanation_sensors(*, device: Device) -> tuple[list[DeviceSensor], list[DeviceSensor]]:
    """The device's sensors that are not deployed, and those deployed whose adapter reports them offline (not
    drift, but what an operator asking "why" wants to see next): one query."""
    rows = (
        DeviceSensor.objects.filter(device=device)
        .filter(~Q(deployment_status=Status.DEPLOYED) | Q(health_status=Health.OFFLINE))
        .order_by("name")
    )
    drifting: list[DeviceSensor] = []
    offline: list[DeviceSensor] = []
    for row in rows:
        (offline if row.deployment_status == Status.DEPLOYED else drifting).append(row)
    return drifting, offline


def _plain(value: Any) -> Any:
    """Choices members print as their value ('pending'), not as an enum."""
    return str(value) if isinstance(value, str) else value


def read_model_diff(*, device: Device) -> list[str]:
    """How the live rows differ from what reconciliation would make of the stored target and current state.

    Empty when the read model is exactly the projection; otherwise one readable line per difference.
    """
    live = {s.name: row_from_model(s) for s in DeviceSensor.objects.filter(device=device)}
    expected = decide_for_device(target=device.target_state, current=device.current_state_or_none(), existing=live)
    differences = [
        f"{device.uuid} {name}: row exists but the sensor is neither desired nor running" for name in expected.removed
    ]
    for name, row in expected.rows.items():
        actual = live.get(name)
        if actual is None:
            differences.append(f"{device.uuid} {name}: row missing (expected {row.deployment_status})")
            continue
        for field in row.__dataclass_fields__:
            want, have = getattr(row, field), getattr(actual, field)
            if want != have and field not in ("status_changed_at", "last_deployed_at"):
                differences.append(f"{device.uuid} {name}: {field} is {_plain(have)!r}, expected {_plain(want)!r}")
    return differences


def drift_episode_list() -> QuerySet[DriftEpisode]:
    return DriftEpisode.objects.select_related("device").order_by("-started_at", "-id")


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _summary(durations: list[float]) -> dict:
    durations = sorted(durations)
    return {
        "episodes": len(durations),
        "meanSeconds": sum(durations) / len(durations) if durations else None,
        "p50Seconds": _percentile(durations, 0.5),
        "p95Seconds": _percentile(durations, 0.95),
        "maxSeconds": durations[-1] if durations else None,
    }


def drift_stats(
    *,
    since: datetime,
    until: datetime | None = None,
    device_uuid: uuid.UUID | str | None = None,
    selector: Selector = ALL_DEVICES,
) -> dict:
    """Time-to-converge (episodes that ended) and time in drift (all episodes, clipped to the window), overall
    and per protocol of the sensors that drifted, for episodes that overlap [since, until) of the devices the
    label selector selects."""
    until = until or timezone.now()
    episodes = DriftEpisode.objects.filter(selector.q("device_id"), started_at__lt=until).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gte=since)
    )
    if device_uuid is not None:
        episodes = episodes.filter(device__uuid=device_uuid)
    converge: list[float] = []
    in_drift = 0.0
    open_count = 0
    by_protocol: dict[str, dict] = {}
    for started, ended, protocols in episodes.values_list("started_at", "ended_at", "protocols").iterator():
        clipped = max((min(ended or until, until) - max(started, since)).total_seconds(), 0.0)
        in_drift += clipped
        if ended is None:
            open_count += 1
        else:
            converge.append((ended - started).total_seconds())
        for protocol in protocols:
            entry = by_protocol.setdefault(protocol, {"converge": [], "inDriftSeconds": 0.0})
            entry["inDriftSeconds"] += clipped
            if ended is not None:
                entry["converge"].append((ended - started).total_seconds())
    return {
        "since": since,
        "until": until,
        "openEpisodes": open_count,
        "inDriftSeconds": in_drift,
        "timeToConverge": _summary(converge),
        "byProtocol": {
            protocol: {"inDriftSeconds": entry["inDriftSeconds"], "timeToConverge": _summary(entry["converge"])}
            for protocol, entry in sorted(by_protocol.items())
        },
    }


# --------------------------------------------------------------------------------------------------------------
# The fleet at a glance (the staff fleet page and the admin's device filter): a constant number of queries each.
# --------------------------------------------------------------------------------------------------------------

# Convergence states of a device. "offline" is about liveness, not convergence, so it overlaps the other three.
FLEET_DEVICE_STATES = ("in_sync", "drifting", "offline", "never_reported")


def offline_cutoff(*, now: datetime | None = None) -> datetime:
    """Devices not seen since this moment are offline (``SENSORSYNC_OFFLINE_AFTER_SECONDS``)."""
    return (now or timezone.now()) - timedelta(seconds=settings.SENSORSYNC_OFFLINE_AFTER_SECONDS)


def device_state_q(state: str, *, now: datetime | None = None) -> Q:
    """The devices in one fleet state, as a filter on ``Device``. The same definitions as the ``/metrics`` gauges:
    a device that never reported is neither in sync nor drifting; one never seen at all is also offline."""
    if state == "in_sync":
        return Q(current_state__isnull=False, target_state__needs_deployment=False)
    if state == "drifting":
        return Q(current_state__isnull=False, target_state__needs_deployment=True)
    if state == "never_reported":
        return Q(current_state__isnull=True)
    if state == "offline":
        return Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=offline_cutoff(now=now))
    raise ValueError(f"Unknown device state {state!r}; expected one of {', '.join(FLEET_DEVICE_STATES)}.")


def fleet_device_counts(*, now: datetime | None = None, selector: Selector = ALL_DEVICES) -> dict[str, int]:
    """How many of the devices the label selector selects are in each fleet state, in draft mode, with a draft not
    deployed, out of retry budget, and in all: one aggregate query."""
    return Device.objects.filter(selector.q()).aggregate(
        total=Count("id"),
        retry_exhausted=Count("id", filter=Q(target_state__retry_exhausted_at__isnull=False)),
        draft_mode=Count("id", filter=Q(draft_mode=True)),
        drafts=Count("id", filter=Q(target_draft__isnull=False)),
        **{state: Count("id", filter=device_state_q(state, now=now)) for state in FLEET_DEVICE_STATES},
    )


def fleet_sensor_counts(*, selector: Selector = ALL_DEVICES) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Sensor rows (of the devices the label selector selects) by protocol, then deployment status (every protocol
    and status present, zeros included), and the deployed sensors whose adapter reports them offline, by protocol
    (every protocol present): one query."""
    matrix = {protocol: dict.fromkeys(Status.values, 0) for protocol in DeviceSensorProtocolChoices.values}
    offline = dict.fromkeys(DeviceSensorProtocolChoices.values, 0)
    grouped = (
        DeviceSensor.objects.filter(selector.q("device_id"))
        .values_list("protocol", "deployment_status")
        .annotate(n=Count("id"), offline=Count("id", filter=Q(health_status=Health.OFFLINE)))
        .order_by()
    )
    for protocol, status, count, offline_count in grouped:
        matrix.setdefault(protocol, dict.fromkeys(Status.values, 0))[status] = count
        if status == Status.DEPLOYED:
            offline[protocol] = offline_count
    return matrix, offline


def fleet_sensor_matrix() -> dict[str, dict[str, int]]:
    """Sensor rows by protocol, then deployment status (every protocol and status present, zeros included)."""
    return fleet_sensor_counts()[0]


def fleet_failing_errors(*, limit: int = 8, selector: Selector = ALL_DEVICES) -> list[tuple[str, int]]:
    """The most common errors of failed sensors (of the devices the label selector selects), with how many sensors
    report each."""
    return list(
        DeviceSensor.objects.filter(selector.q("device_id"), deployment_status=Status.FAILED)
        .values_list("deployment_error")
        .annotate(n=Count("id"))
        .order_by("-n", "deployment_error")[:limit]
    )


def drift_episodes_overlapping(
    *, since: datetime, until: datetime | None = None, selector: Selector = ALL_DEVICES
) -> QuerySet[DriftEpisode]:
    """Episodes that overlap [since, until) (the same window as ``drift_stats``), newest first, with their device."""
    until = until or timezone.now()
    return (
        DriftEpisode.objects.filter(selector.q("device_id"), started_at__lt=until)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=since))
        .select_related("device")
        .only(
            "id",
            "started_at",
            "ended_at",
            "cause",
            "start_target_version",
            "start_reported_version",
            "end_target_version",
            "drifting_sensors",
            "device__id",
            "device__name",
            "device__uuid",
        )
        .order_by("-started_at", "-id")
    )


def time_to_converge_series(
    *, since: datetime, until: datetime | None = None, selector: Selector = ALL_DEVICES
) -> dict:
    """Durations (seconds) of the episodes that ended in [since, until), and their p50 / p95 per hour of ending.

    ``hours`` has one entry per hour slot from ``since`` (a slot with no episode has ``episodes`` 0 and no
    percentiles), so a chart can show the gaps. One query.
    """
    until = until or timezone.now()
    ended = DriftEpisode.objects.filter(selector.q("device_id"), ended_at__gte=since, ended_at__lt=until).values_list(
        "started_at", "ended_at"
    )
    slots = max(1, math.ceil((until - since).total_seconds() / 3600))
    per_hour: list[list[float]] = [[] for _ in range(slots)]
    durations: list[float] = []
    for started, ended_at in ended:
        assert ended_at is not None  # the filter on ended_at leaves the open episodes out
        seconds = (ended_at - started).total_seconds()
        durations.append(seconds)
        per_hour[min(slots - 1, int((ended_at - since).total_seconds() // 3600))].append(seconds)
    hours = []
    for index, values in enumerate(per_hour):
        values.sort()
        hours.append(
            {
                "start": since + timedelta(hours=index),
                "episodes": len(values),
                "p50Seconds": _percentile(values, 0.5),
                "p95Seconds": _percentile(values, 0.95),
            }
        )
    return {"since": since, "until": until, "durations": sorted(durations), "hours": hours}


def drifting_sensors_of(*, device_ids: Iterable[int]) -> dict[int, list[dict]]:
    """The sensors not deployed right now on each of the given devices, by device id: one query."""
    found: dict[int, list[dict]] = {}
    rows = (
        DeviceSensor.objects.filter(device_id__in=list(device_ids))
        .exclude(deployment_status=Status.DEPLOYED)
        .order_by("device_id", "name")
        .values_list("device_id", "name", "protocol", "deployment_status", "deployment_error")
    )
    for device_id, name, protocol, status, error in rows:
        found.setdefault(device_id, []).append({"name": name, "protocol": protocol, "status": status, "error": error})
    return found
