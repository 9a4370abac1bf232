from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from devices.models import Device
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor

from .models import DriftEpisode, DriftEpisodeSensor


def drift_explain(*, device: Device) -> dict:
    """Why a device is not converged, in the order a person would check: fetched? applied? which sensors?"""
    target = device.target_state
    current = device.current_state_or_none()
    fetched, applied = device.last_fetched_version, current.version if current else None
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
    return {
        "deviceUuid": str(device.uuid),
        "inSync": stage == "in_sync",
        "stage": stage,
        "reason": reason.format(t=target.version, f=fetched, a=applied),
        "targetVersion": target.version,
        "targetUpdatedAt": target.updated_at,
        "lastFetchedVersion": fetched,
        "lastFetchedAt": device.last_fetched_at,
        "reportedVersion": applied,
        "lastReportedAt": current.reported_at if current else None,
        "lastSeenAt": device.last_seen_at,
        "sensors": [
            {
                "name": row.name,
                "deploymentStatus": row.deployment_status,
                "running": row.running,
                "deploymentError": row.deployment_error,
                "deploymentAttempts": row.deployment_attempts,
                "configVersion": row.config_version,
                "statusChangedAt": row.status_changed_at,
            }
            for row in drifting_sensors(device=device)
        ],
    }


def drifting_sensors(*, device: Device) -> QuerySet[DeviceSensor]:
    return DeviceSensor.objects.filter(device=device).exclude(deployment_status=Status.DEPLOYED).order_by("name")


def _plain(value):
    """Choices members print as their value ('pending'), not as an enum."""
    return str(value) if isinstance(value, str) else value


def read_model_diff(*, device: Device) -> list[str]:
    """How the live rows differ from what reconciliation would make of the stored target and current state.

    Empty when the read model is exactly the projection; otherwise one readable line per difference.
    """
    from .services import decide_for_device, row_from_model

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
    return DriftEpisode.objects.select_related("device").prefetch_related("sensors").order_by("-started_at", "-id")


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


def drift_stats(*, since: datetime, until: datetime | None = None, device_uuid=None) -> dict:
    """Time-to-converge (episodes that ended) and time in drift (all episodes, clipped to the window), overall
    and per protocol of the sensors that drifted, for episodes that overlap [since, until)."""
    until = until or timezone.now()
    episodes = DriftEpisode.objects.filter(started_at__lt=until).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gte=since)
    )
    if device_uuid is not None:
        episodes = episodes.filter(device__uuid=device_uuid)
    converge: list[float] = []
    in_drift = 0.0
    by_protocol: dict[str, dict] = {}
    rows = episodes.values_list("id", "started_at", "ended_at")
    protocols: dict[int, set[str]] = {}
    for episode_id, protocol in DriftEpisodeSensor.objects.filter(episode__in=episodes.values("id")).values_list(
        "episode_id", "protocol"
    ):
        protocols.setdefault(episode_id, set()).add(protocol)
    open_count = 0
    for episode_id, started, ended in rows:
        clipped = (min(ended or until, until) - max(started, since)).total_seconds()
        in_drift += max(clipped, 0.0)
        if ended is None:
            open_count += 1
        for protocol in protocols.get(episode_id, ()):
            entry = by_protocol.setdefault(protocol, {"converge": [], "inDriftSeconds": 0.0})
            entry["inDriftSeconds"] += max(clipped, 0.0)
            if ended is not None:
                entry["converge"].append((ended - started).total_seconds())
        if ended is not None:
            converge.append((ended - started).total_seconds())
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
