"""Applying the reconciliation decision to the read model.

Every writer of ``DeviceSensor`` rows (staff edits, agent reports, manual reconcile, rebuild) goes through
``device_reconcile``: one SELECT of the device's rows, the pure decision, then at most one upsert (changed rows
only), one DELETE and one UPDATE of the target state, whatever the number of sensors.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field

from django.db import models, transaction
from django.utils import timezone

from devices.locking import device_write
from devices.models import Device, DeviceCurrentState, DeviceTargetState
from events.choices import EventTypeChoices
from events.context import actor_label
from events.services import event_recording
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor

from .agent_protocol import Report
from .choices import DriftEpisodeCauseChoices
from .decision import Decision, SensorRow, decide
from .metrics import RECONCILE_SECONDS
from .models import DriftEpisode, DriftEpisodeSensor

logger = logging.getLogger("sensorsync.reconciliation")

ROW_FIELDS = tuple(SensorRow.__dataclass_fields__)
UNRECONCILED_DIGEST = ""  # a stored report whose reconciliation failed: no report's digest equals it
UPSERT_UPDATE_FIELDS = [f for f in ROW_FIELDS if f != "name"] + ["updated_by", "updated_at"]


@dataclass
class ReconcileResult:
    device_uuid: str
    target_version: int
    reported_version: int | None
    in_sync: bool
    rows: dict[str, SensorRow]
    drifting: list[str]
    inserted: int = 0
    updated: int = 0
    removed: int = 0
    events: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows.values() if row.deployment_status == Status.FAILED)


def row_from_model(sensor: DeviceSensor) -> SensorRow:
    values = {name: getattr(sensor, name) for name in ROW_FIELDS}
    values["sensor_id"] = str(values["sensor_id"])
    return SensorRow(**values)


def decide_for_device(
    *, target: DeviceTargetState, current: DeviceCurrentState | None, existing: dict[str, SensorRow]
) -> Decision:
    return decide(
        target_version=target.version,
        desired=target.config.get("protocolAdapterDevices", []),
        reported_version=current.version if current else None,
        running=current.config.get("protocolAdapterDevices", []) if current else [],
        sensor_health=current.sensor_health if current else {},
        existing=existing,
        was_in_sync=not target.needs_deployment,
        now=timezone.now(),
    )


def _drift_episode_track(*, device: Device, decision: Decision, cause: str, now) -> None:
    """Open, update or close the device's drift episode; called only when the drift state changed."""
    if decision.in_sync:
        DriftEpisode.objects.filter(device=device, ended_at__isnull=True).update(
            ended_at=now, end_target_version=decision.target_version
        )
        return
    sensors = [
        {
            "name": n,
            "protocol": decision.rows[n].protocol,
            "status": decision.rows[n].deployment_status,
            "error": decision.rows[n].deployment_error,
        }
        for n in decision.drifting
    ]
    episode = DriftEpisode.objects.filter(device=device, ended_at__isnull=True).first()
    if episode is None:
        episode = DriftEpisode.objects.create(
            device=device,
            started_at=now,
            cause=cause,
            start_target_version=decision.target_version,
            start_reported_version=decision.reported_version,
            drifting_sensors=sensors,
        )
    else:
        episode.drifting_sensors = sensors
        episode.save(update_fields=["drifting_sensors"])
    if sensors:
        DriftEpisodeSensor.objects.bulk_create(
            [
                DriftEpisodeSensor(episode=episode, name=s["name"], protocol=s["protocol"], first_status=s["status"])
                for s in sensors
            ],
            ignore_conflicts=True,
        )


def device_reconcile(
    *,
    device: Device,
    target: DeviceTargetState,
    current: DeviceCurrentState | None,
    actor: str,
    cause: str = DriftEpisodeCauseChoices.MANUAL,
) -> ReconcileResult:
    """Re-project one device's rows from its target and current state.

    The caller holds the device row lock and the transaction; events go to the open ``event_recording`` scope
    (one is opened here if the caller has none).
    """
    started = time.perf_counter()
    existing_models = {s.name: s for s in DeviceSensor.objects.filter(device=device)}
    existing = {name: row_from_model(s) for name, s in existing_models.items()}
    decision = decide_for_device(target=target, current=current, existing=existing)

    now = timezone.now()
    changed: list[DeviceSensor] = []
    inserted = 0
    for name, row in decision.rows.items():
        previous = existing_models.get(name)
        if previous is not None and existing[name] == row:
            continue
        inserted += previous is None
        changed.append(
            DeviceSensor(
                device=device,
                **{f: getattr(row, f) for f in ROW_FIELDS},
                created_by=previous.created_by if previous else actor,
                created_at=previous.created_at if previous else now,
                updated_by=actor,
                updated_at=now,
            )
        )
    if changed:
        DeviceSensor.objects.bulk_create(
            changed,
            update_conflicts=True,
            unique_fields=["device", "name"],
            update_fields=UPSERT_UPDATE_FIELDS,
        )
    if decision.removed:
        DeviceSensor.objects.filter(device=device, name__in=decision.removed).delete()

    needs_deployment = not decision.in_sync
    target_changes: dict = {}
    if target.needs_deployment != needs_deployment:
        target_changes["needs_deployment"] = needs_deployment
        if decision.in_sync:
            target_changes["last_deployed_at"] = now
    if target_changes:
        DeviceTargetState.objects.filter(pk=target.pk).update(**target_changes)
        for name, value in target_changes.items():
            setattr(target, name, value)

    if decision.drift_changed:
        _drift_episode_track(device=device, decision=decision, cause=cause, now=now)
    with event_recording(str(device.uuid)) as recorder:
        for event_type, data in decision.events:
            recorder.record(event_type, data, actor=actor)

    result = ReconcileResult(
        device_uuid=str(device.uuid),
        target_version=target.version,
        reported_version=current.version if current else None,
        in_sync=decision.in_sync,
        rows=decision.rows,
        drifting=decision.drifting,
        inserted=inserted,
        updated=len(changed) - inserted,
        removed=len(decision.removed),
        events=decision.events,
    )
    elapsed = time.perf_counter() - started
    RECONCILE_SECONDS.observe(elapsed)
    logger.info(
        "reconciled device=%s target_version=%s reported_version=%s in_sync=%s sensors=%d inserted=%d "
        "updated=%d removed=%d failed=%d duration_ms=%.2f",
        result.device_uuid,
        result.target_version,
        result.reported_version,
        result.in_sync,
        len(result.rows),
        result.inserted,
        result.updated,
        result.removed,
        result.failed,
        elapsed * 1000,
    )
    return result


def current_state_reconcile(*, current: DeviceCurrentState, actor: str) -> ReconcileResult | None:
    """Reconcile after a report is stored; never lets a reconciliation failure lose the report.

    Runs in a savepoint: on an exception the sensor rows stay exactly as they were, the failure is logged and
    recorded as ``device.reconcile_failed``, and a later report or ``manage.py reconcile`` repairs it.
    """
    device = current.device
    try:
        with transaction.atomic():
            return device_reconcile(
                device=device,
                target=device.target_state,
                current=current,
                actor=actor,
                cause=DriftEpisodeCauseChoices.AGENT_REPORT,
            )
    except Exception as exc:
        error_id = uuid.uuid4().hex
        logger.exception("reconciliation failed device=%s error_id=%s", device.uuid, error_id)
        # Forget the digest, so the agent's next report (even an identical one) is applied and repairs the rows.
        DeviceCurrentState.objects.filter(pk=current.pk).update(digest=UNRECONCILED_DIGEST)
        current.digest = UNRECONCILED_DIGEST
        with event_recording(str(device.uuid)) as recorder:
            recorder.record(
                EventTypeChoices.DEVICE_RECONCILE_FAILED,
                {"reported_version": current.version, "error": type(exc).__name__, "error_id": error_id},
                actor=actor,
            )
        return None


# The agent's side of the loop ---------------------------------------------------------------------------------


class ReportOutcome(models.TextChoices):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    STALE = "stale"


@dataclass
class ReportVerdict:
    """What the server made of one report, returned to the agent."""

    outcome: str
    device: Device
    report_version: int
    result: ReconcileResult | None = None
    reconciliation_failed: bool = False


def _liveness_touch(device: Device, *, now, report: Report | None = None, fetched_version: int | None = None) -> None:
    changes = {"last_seen_at": now}
    if report is not None:
        changes["uptime"] = report.uptime if report.uptime is not None else device.uptime
        if report.order is not None and (device.last_report_order is None or report.order > device.last_report_order):
            changes["last_report_order"] = report.order
    if fetched_version is not None:
        changes["last_fetched_version"] = fetched_version
        changes["last_fetched_at"] = now
    Device.objects.filter(pk=device.pk).update(**changes)
    for name, value in changes.items():
        setattr(device, name, value)


def _is_stale(device: Device, report: Report) -> bool:
    return report.order is not None and device.last_report_order is not None and report.order < device.last_report_order


def target_state_fetched(*, device: Device) -> None:
    """Record that the agent now holds the current target version (answered 200 or 304)."""
    _liveness_touch(device, now=timezone.now(), fetched_version=device.target_state.version)


def state_report_apply(*, device: Device, report: Report) -> ReportVerdict:
    """Store an agent's report and reconcile the read model from it.

    ``device`` comes from authentication (not locked). An identical repeat of the stored report and a report
    older than the newest one seen only refresh liveness; both are decided first without a transaction, then
    again under the device row lock, because a concurrent report may have won in between.
    """
    now = timezone.now()
    current = device.current_state_or_none()
    if _is_stale(device, report):
        _liveness_touch(device, now=now, report=report)
        return ReportVerdict(ReportOutcome.STALE, device, report.version)
    if current is not None and current.digest == report.digest:
        _liveness_touch(device, now=now, report=report)
        return ReportVerdict(ReportOutcome.UNCHANGED, device, report.version)

    actor = f"agent:{device.uuid}"
    with device_write(uuid=device.uuid) as device, event_recording(str(device.uuid)) as recorder:
        current = device.current_state_or_none()
        if _is_stale(device, report) or (current is not None and current.digest == report.digest):
            outcome = ReportOutcome.STALE if _is_stale(device, report) else ReportOutcome.UNCHANGED
            _liveness_touch(device, now=now, report=report)
            return ReportVerdict(outcome, device, report.version)
        recorder.record(
            EventTypeChoices.CURRENT_STATE_REPORTED,
            {
                "version": report.version,
                "previous_version": current.version if current else None,
                "running_sensors": [s["name"] for s in report.sensors],
                "digest": report.digest,
            },
            actor=actor,
        )
        created = current is None
        if created:
            current = DeviceCurrentState(device=device)
        current.config = report.config
        current.apps = report.apps
        current.version = report.version
        current.seq = report.order
        current.sensor_health = report.sensor_health
        current.reported_at = now
        current.digest = report.digest
        current.save(force_insert=created)  # post_save reconciles (reconciliation.handlers)
        device.current_state = current

        device.last_seen_at = now
        device.os_version = report.os_version if report.os_version is not None else device.os_version
        device.agent_version = report.agent_version if report.agent_version is not None else device.agent_version
        device.ip_address = report.local_ip if report.local_ip is not None else device.ip_address
        device.uptime = report.uptime if report.uptime is not None else device.uptime
        if report.order is not None:
            device.last_report_order = report.order
        device.save(
            update_fields=["last_seen_at", "os_version", "agent_version", "ip_address", "uptime", "last_report_order"]
        )
        result = getattr(current, "reconciliation", None)
        return ReportVerdict(
            ReportOutcome.APPLIED, device, report.version, result=result, reconciliation_failed=result is None
        )


def device_reconcile_now(*, uuid, user) -> ReconcileResult:
    """Re-run reconciliation from the stored target and current state (manual repair; the same projection)."""
    with device_write(uuid=uuid) as device:
        return device_reconcile(
            device=device, target=device.target_state, current=device.current_state_or_none(), actor=actor_label(user)
        )
