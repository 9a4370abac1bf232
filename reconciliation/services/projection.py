"""Re-projecting a device's sensor rows (the read model) from its target and last report.

Every writer of ``DeviceSensor`` rows (staff edits, agent reports, manual reconcile, rebuild) goes through
``device_reconcile``: one SELECT of the device's rows, the pure decision, then at most one upsert (changed rows
only), one DELETE and one UPDATE of the target state, whatever the number of sensors.

The same UPDATE keeps the device's retry budget (``retry_budget``): a report that brings a new failed result for the
version it runs counts one failed apply, and the apply that reaches SENSORSYNC_RETRY_BUDGET marks the device
exhausted at that version (its failed rows say so; ``device.retry_budget_exhausted``).
"""

import logging
import time
import uuid as uuid_lib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from devices.locking import device_write
from devices.models import Device, DeviceCurrentState, DeviceTargetState
from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label
from events.services import event_recording
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from sensorsync_project.fields import concrete_field

from ..choices import DriftEpisodeCauseChoices
from ..decision import Decision, SensorRow
from ..metrics import RECONCILE_SECONDS
from ..selectors import ROW_FIELDS, decide_for_device, sensor_rows_read
from .drift import drift_episode_track

logger = logging.getLogger("sensorsync.reconciliation")

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
    # This reconciliation used up the device's retry budget, and the setting asks to fall back to this version.
    fallback_version: int | None = None

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows.values() if row.deployment_status == Status.FAILED)


_UPSERT_SQL: dict[str, str] = {}


def _upsert_sql(connection: BaseDatabaseWrapper) -> str:
    """INSERT ... SELECT FROM jsonb_to_recordset(%s) ON CONFLICT DO UPDATE, from the model's own fields."""
    sql = _UPSERT_SQL.get(connection.vendor)
    if sql is None:
        fields = [f for f in DeviceSensor._meta.concrete_fields if not f.primary_key]
        qn = connection.ops.quote_name
        columns = ", ".join(qn(f.column) for f in fields)
        types = ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)
        updates = ", ".join(
            f"{qn(f.column)} = EXCLUDED.{qn(f.column)}" for f in fields if f.name in UPSERT_UPDATE_FIELDS
        )
        conflict = ", ".join(qn(concrete_field(DeviceSensor, name).column) for name in ("device", "name"))
        sql = _UPSERT_SQL[connection.vendor] = (
            f"INSERT INTO {qn(DeviceSensor._meta.db_table)} ({columns}) SELECT {columns} "
            f"FROM jsonb_to_recordset(%s::jsonb) AS r({types}) ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )
    return sql


def sensor_rows_upsert(rows: list[dict]) -> None:
    """Insert or update a device's sensor rows in one statement; each row is a dict of the model's attnames.

    On PostgreSQL all rows travel as one JSON parameter: measured on a 200-sensor report, Django's bulk_create
    (its insert compiler, and psycopg escaping every JSON value into UNNEST arrays) was half the request's CPU.
    """
    if connection.vendor != "postgresql":
        DeviceSensor.objects.bulk_create(
            [DeviceSensor(**row) for row in rows],
            update_conflicts=True,
            unique_fields=["device", "name"],
            update_fields=UPSERT_UPDATE_FIELDS,
        )
        return
    fields = [(f.attname, f.column) for f in DeviceSensor._meta.concrete_fields if not f.primary_key]
    payload = orjson.dumps([{column: row[attname] for attname, column in fields} for row in rows]).decode()
    with connection.cursor() as cursor:
        cursor.execute(_upsert_sql(connection), [payload])


def sensor_statuses(rows: dict[str, SensorRow]) -> dict[str, dict]:
    """What an agent's verdict says of each sensor (cached on the target state for unchanged reports)."""
    return {
        name: {
            "status": str(row.deployment_status),
            "running": row.running,
            "error": row.deployment_error,
            "health": row.health_status or None,
        }
        for name, row in rows.items()
    }


def _changed_rows(
    device: Device, decision: Decision, existing: dict[str, SensorRow], *, actor: str, now: datetime
) -> list[dict]:
    """The decided rows that differ from the stored ones, as the upsert writes them."""
    return [
        {
            "device_id": device.pk,
            **{f: getattr(row, f) for f in ROW_FIELDS},
            # Written by an insert only: the upsert's update keeps a row's creation (UPSERT_UPDATE_FIELDS).
            "created_by": actor,
            "created_at": now,
            "updated_by": actor,
            "updated_at": now,
        }
        for name, row in decision.rows.items()
        if existing.get(name) != row
    ]


def _target_changes(
    device: Device,
    target: DeviceTargetState,
    decision: Decision,
    existing: dict[str, SensorRow],
    *,
    cause: str,
    now: datetime,
) -> dict[str, Any]:
    """What the target's row caches of the decision and no longer matches: the sync flag (and when it was last
    reached), the sensors' statuses, the drift episode (tracked here when drift started, changed or ended)."""
    changes: dict[str, Any] = {}
    needs_deployment = not decision.in_sync
    if target.needs_deployment != needs_deployment:
        changes["needs_deployment"] = needs_deployment
        if decision.in_sync:
            changes["last_deployed_at"] = now
    if decision.in_sync and target.deployed_version != decision.target_version:
        changes["deployed_version"] = decision.target_version
    statuses = sensor_statuses(decision.rows)
    if statuses != target.sensor_statuses:
        changes["sensor_statuses"] = statuses
    if decision.drift_changed:
        drift = drift_episode_track(
            device=device, target=target, decision=decision, existing=existing, cause=cause, now=now
        )
        if drift != target.drift:
            changes["drift"] = drift
    return changes


def _retry_budget_changes(target: DeviceTargetState, decision: Decision, *, applied_anew: bool, now: datetime) -> dict:
    """What the decision does to the retry budget: one more failed apply when a report brought a new failed result
    for the target version (``applied_anew``), the budget exhausted when that reaches SENSORSYNC_RETRY_BUDGET, and
    convergence clearing the count (and an exhaustion at the version it converged at)."""
    version = decision.target_version
    if decision.in_sync:
        changes: dict[str, Any] = {}
        if target.failed_applies or target.failed_applies_version is not None:
            changes.update(failed_applies=0, failed_applies_version=None)
        if target.retry_exhausted:  # it recovered by itself (a restart of its agent applied it)
            changes.update(retry_exhausted_at=None, retry_exhausted_version=None, retry_fallback_version=None)
        return changes
    budget = settings.SENSORSYNC_RETRY_BUDGET
    failed = any(row.deployment_status == Status.FAILED for row in decision.rows.values())
    if not (applied_anew and failed and budget > 0 and decision.reported_version == version):
        return {}
    if target.retry_exhausted:
        return {}  # no longer counted: it waits for staff
    count = target.failed_applies + 1 if target.failed_applies_version == version else 1
    changes = {"failed_applies": count, "failed_applies_version": version}
    if count >= budget:
        changes.update(retry_exhausted_at=now, retry_exhausted_version=version, retry_fallback_version=None)
    return changes


def _fallback_version(target: DeviceTargetState) -> int | None:
    """The version an exhausted budget falls back to (SENSORSYNC_RETRY_BUDGET_FALLBACK): the last one deployed."""
    if not settings.SENSORSYNC_RETRY_BUDGET_FALLBACK or target.deployed_version in (None, target.version):
        return None
    return target.deployed_version


def _with_episode(event_type: str, data: dict, *, before: dict, after: dict) -> dict:
    """Drift events name their episode: ``device.config_drift`` says whether it started one (drift began) or the
    drifting set changed within it, ``device.in_sync`` which one it ended (null: converged without one)."""
    if event_type == EventTypeChoices.DEVICE_CONFIG_DRIFT:
        return {**data, "episode": after.get("episode"), "episode_started": "episode" not in before}
    if event_type == EventTypeChoices.DEVICE_IN_SYNC:
        return {**data, "episode": before.get("episode")}
    return data


def device_reconcile(
    *,
    device: Device,
    target: DeviceTargetState,
    current: DeviceCurrentState | None,
    actor: str,
    cause: str = DriftEpisodeCauseChoices.MANUAL,
    applied_anew: bool = False,
) -> ReconcileResult:
    """Re-project one device's rows from its target and current state.

    The caller holds the device row lock and the transaction; events go to the open ``event_recording`` scope
    (one is opened here if the caller has none). ``applied_anew``: ``current`` is a report whose version or running
    configuration differs from the one before it, which only an apply of the agent makes (the retry budget counts
    it when it failed).
    """
    started = time.perf_counter()
    existing = sensor_rows_read(device_id=device.pk)
    decision = decide_for_device(target=target, current=current, existing=existing)

    now = timezone.now()
    budget_changes = _retry_budget_changes(target, decision, applied_anew=applied_anew, now=now)
    exhausted = budget_changes.get("retry_exhausted_at") is not None
    if exhausted:  # decided again, so that its failed rows say why they are no longer retried
        for name, value in budget_changes.items():
            setattr(target, name, value)
        decision = decide_for_device(target=target, current=current, existing=existing)
    changed = _changed_rows(device, decision, existing, actor=actor, now=now)
    inserted = sum(1 for row in changed if row["name"] not in existing)
    if changed:
        sensor_rows_upsert(changed)
    if decision.removed:
        DeviceSensor.objects.filter(device=device, name__in=decision.removed).delete()

    drift_before = target.drift or {}
    target_changes = {**_target_changes(device, target, decision, existing, cause=cause, now=now), **budget_changes}
    if target_changes:
        DeviceTargetState.objects.filter(pk=target.pk).update(**target_changes)
        for name, value in target_changes.items():
            setattr(target, name, value)

    events = [
        (event_type, _with_episode(event_type, data, before=drift_before, after=target.drift or {}))
        for event_type, data in decision.events
    ]
    fallback_version = _fallback_version(target) if exhausted else None
    if exhausted:
        events.append(
            (
                EventTypeChoices.DEVICE_RETRY_BUDGET_EXHAUSTED,
                {
                    "target_version": target.version,
                    "failed_applies": target.failed_applies,
                    "budget": settings.SENSORSYNC_RETRY_BUDGET,
                    "failed_sensors": [
                        {"name": name, "error": row.deployment_error}
                        for name, row in sorted(decision.rows.items())
                        if row.deployment_status == Status.FAILED
                    ],
                    "fallback_version": fallback_version,
                },
            )
        )
    with event_recording(str(device.uuid)) as recorder:
        for event_type, data in events:
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
        events=events,
        fallback_version=fallback_version,
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


def current_state_reconcile(*, current: DeviceCurrentState, actor: str, applied_anew: bool = False) -> ReconcileResult:
    """Reconcile after a report is stored (for the receiver of ``reconciliation.signals.state_report_stored``); the
    caller holds the device lock.

    Exceptions propagate: ``state_report_apply`` then stores the report without reconciling (see there).
    """
    device = current.device
    return device_reconcile(
        device=device,
        target=device.target_state,
        current=current,
        actor=actor,
        cause=DriftEpisodeCauseChoices.AGENT_REPORT,
        applied_anew=applied_anew,
    )


def device_reconcile_now(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> ReconcileResult:
    """Re-run reconciliation from the stored target and current state (manual repair; the same projection)."""
    with device_write(uuid=uuid) as device:
        return device_reconcile(
            device=device, target=device.target_state, current=device.current_state_or_none(), actor=actor_label(user)
        )
