"""Drift episodes: each stretch of a device's drift is one ``DriftEpisode`` row (device, start, end, cause, the
sensors that drifted and their protocols), so time-to-converge per device and per protocol is a query. Written by
``projection.device_reconcile`` only when the drift state changes."""

from collections.abc import Iterable
from datetime import datetime

from devices.models import Device, DeviceTargetState

from ..decision import Decision, SensorRow
from ..models import DriftEpisode


def _drift_sensor(row: SensorRow) -> dict:
    return {"protocol": str(row.protocol), "first_status": str(row.deployment_status)}


def _drifting_list(rows: dict[str, SensorRow], names: Iterable[str]) -> list[dict]:
    return [
        {
            "name": n,
            "protocol": str(rows[n].protocol),
            "status": str(rows[n].deployment_status),
            "error": rows[n].deployment_error,
        }
        for n in names
    ]


def drift_episode_track(
    *,
    device: Device,
    target: DeviceTargetState,
    decision: Decision,
    existing: dict[str, SensorRow],
    cause: str,
    now: datetime,
) -> dict:
    """The target's new ``drift`` value, writing the episode row only when drift starts (INSERT) or ends
    (UPDATE); called only when the drift state changed."""
    drift = target.drift or {}
    sensors = dict(drift.get("sensors", {}))
    if decision.in_sync:
        if "episode" in drift:
            gathered = [{"name": name, **entry} for name, entry in sorted(sensors.items())]
            protocols: dict[str, int] = {}
            for entry in gathered:
                protocols[entry["protocol"]] = protocols.get(entry["protocol"], 0) + 1
            last = sorted(name for name, row in existing.items() if row.deployment_status != "deployed")
            DriftEpisode.objects.filter(pk=drift["episode"]).update(
                ended_at=now,
                end_target_version=decision.target_version,
                sensors=gathered,
                protocols=protocols,
                drifting_sensors=_drifting_list(existing, last),
            )
        return {}
    for name in decision.drifting:
        sensors.setdefault(name, _drift_sensor(decision.rows[name]))
    if "episode" not in drift:
        initial = [{"name": name, **entry} for name, entry in sorted(sensors.items())]
        protocols = {}
        for entry in initial:
            protocols[entry["protocol"]] = protocols.get(entry["protocol"], 0) + 1
        episode = DriftEpisode.objects.create(
            device=device,
            started_at=now,
            cause=cause,
            start_target_version=decision.target_version,
            start_reported_version=decision.reported_version,
            drifting_sensors=_drifting_list(decision.rows, decision.drifting),
            sensors=initial,
            protocols=protocols,
        )
        return {"episode": episode.pk, "sensors": sensors}
    return {"episode": drift["episode"], "sensors": sensors}
