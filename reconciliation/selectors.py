from django.db.models import QuerySet

from devices.models import Device
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor


def drift_explain(*, device: Device) -> dict:
    """Why a device is not converged, in the order a person would check: fetched? applied? which sensors?"""
    target = device.target_state
    current = device.current_state_or_none()
    fetched, applied = device.last_fetched_version, current.version if current else None
    if applied == target.version and not target.needs_deployment:
        stage, reason = "in_sync", "The agent runs target version {t} exactly."
    elif fetched is None:
        stage, reason = "never_fetched", "The agent has never fetched its target state."
    elif fetched < target.version:
        stage, reason = (
            "not_fetched",
            "The agent last fetched version {f}; target version {t} is waiting for its next poll.",
        )
    elif current is None:
        stage, reason = "never_reported", "The agent fetched version {f} but has never reported what it runs."
    elif applied < target.version:
        stage, reason = "not_applied", "The agent fetched version {f} but still reports running version {a}."
    else:
        stage, reason = "sensors_failed", "The agent applied version {a}, but some sensors do not run as desired."
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
                differences.append(f"{device.uuid} {name}: {field} is {have!r}, expected {want!r}")
    return differences
