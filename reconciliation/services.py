"""Applying the reconciliation decision to the read model.

Every writer of ``DeviceSensor`` rows (staff edits, agent reports, manual reconcile, rebuild) goes through
``device_reconcile``: one SELECT of the device's rows, the pure decision, then at most one upsert (changed rows
only), one DELETE and one UPDATE of the target state, whatever the number of sensors.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, models, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from devices.locking import device_events, device_row_lock, device_write
from devices.models import Device, DeviceAccessRevoked, DeviceCurrentState, DeviceTargetState
from devices.selectors import REPORT_DEFERRED_TARGET
from events.choices import EventTypeChoices
from events.context import actor_label
from events.services import event_recording
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from sensors.validation import config_sensors
from sensorsync_project.precompiled import CompiledLookup

from .agent_protocol import HEALTH_SOURCES, RepeatedReport, Report, health_merge, identity_digest, part_digest
from .choices import DriftEpisodeCauseChoices
from .decision import Decision, SensorRow, decide
from .metrics import RECONCILE_SECONDS
from .models import DriftEpisode

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


# What reconciliation reads of a device's rows: the decision's fields. A values_list() query compiled once per
# process: no model instances on the hot path.
_SENSOR_ID = ROW_FIELDS.index("sensor_id")
_DEVICE_ROWS = CompiledLookup(
    lambda device_id: DeviceSensor.objects.filter(device_id=Value(device_id)).order_by().values_list(*ROW_FIELDS)
)


def sensor_rows_read(*, device_id: int) -> dict[str, SensorRow]:
    """A device's sensor rows by name, in one query."""
    found = {}
    for values in _DEVICE_ROWS.rows(device_id):
        fields = list(values)
        fields[_SENSOR_ID] = str(fields[_SENSOR_ID])
        row = SensorRow(*fields)
        found[row.name] = row
    return found


_UPSERT_SQL: dict[str, str] = {}


def _upsert_sql(connection) -> str:
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
        conflict = ", ".join(qn(DeviceSensor._meta.get_field(name).column) for name in ("device", "name"))
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


def row_from_model(sensor: DeviceSensor) -> SensorRow:
    values = {name: getattr(sensor, name) for name in ROW_FIELDS}
    values["sensor_id"] = str(values["sensor_id"])
    return SensorRow(**values)


def decide_for_device(
    *, target: DeviceTargetState, current: DeviceCurrentState | None, existing: dict[str, SensorRow]
) -> Decision:
    return decide(
        target_version=target.version,
        desired=config_sensors(target.config),
        reported_version=current.version if current else None,
        running=config_sensors(current.config) if current else [],
        sensor_health=health_merge(current.sensor_health) if current else {},
        existing=existing,
        was_in_sync=not target.needs_deployment,
        now=timezone.now(),
    )


def _drift_sensor(row: SensorRow) -> dict:
    return {"protocol": str(row.protocol), "first_status": str(row.deployment_status)}


def _drifting_list(rows: dict[str, SensorRow], names) -> list[dict]:
    return [
        {
            "name": n,
            "protocol": str(rows[n].protocol),
            "status": str(rows[n].deployment_status),
            "error": rows[n].deployment_error,
        }
        for n in names
    ]


def _drift_episode_track(
    *, device: Device, target: DeviceTargetState, decision: Decision, existing: dict[str, SensorRow], cause: str, now
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
    existing = sensor_rows_read(device_id=device.pk)
    decision = decide_for_device(target=target, current=current, existing=existing)

    now = timezone.now()
    changed: list[dict] = []
    inserted = 0
    for name, row in decision.rows.items():
        previous = existing.get(name)
        if previous == row:
            continue
        inserted += previous is None
        changed.append(
            {
                "device_id": device.pk,
                **{f: getattr(row, f) for f in ROW_FIELDS},
                # Written by an insert only: the upsert's update keeps a row's creation (UPSERT_UPDATE_FIELDS).
                "created_by": actor,
                "created_at": now,
                "updated_by": actor,
                "updated_at": now,
            }
        )
    if changed:
        sensor_rows_upsert(changed)
    if decision.removed:
        DeviceSensor.objects.filter(device=device, name__in=decision.removed).delete()

    needs_deployment = not decision.in_sync
    target_changes: dict = {}
    if target.needs_deployment != needs_deployment:
        target_changes["needs_deployment"] = needs_deployment
        if decision.in_sync:
            target_changes["last_deployed_at"] = now
    statuses = sensor_statuses(decision.rows)
    if statuses != target.sensor_statuses:
        target_changes["sensor_statuses"] = statuses
    if decision.drift_changed:
        drift = _drift_episode_track(
            device=device, target=target, decision=decision, existing=existing, cause=cause, now=now
        )
        if drift != target.drift:
            target_changes["drift"] = drift
    if target_changes:
        DeviceTargetState.objects.filter(pk=target.pk).update(**target_changes)
        for name, value in target_changes.items():
            setattr(target, name, value)

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


def current_state_reconcile(*, current: DeviceCurrentState, actor: str) -> ReconcileResult:
    """Reconcile after a report is stored (the post_save handler); the caller holds the device lock.

    Exceptions propagate: ``state_report_apply`` then stores the report without reconciling (see there).
    """
    device = current.device
    return device_reconcile(
        device=device,
        target=device.target_state,
        current=current,
        actor=actor,
        cause=DriftEpisodeCauseChoices.AGENT_REPORT,
    )


# The agent's side of the loop ---------------------------------------------------------------------------------


class ReportOutcome(models.TextChoices):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    STALE = "stale"
    QUEUED = "queued"


@dataclass
class ReportVerdict:
    """What the server made of one report, returned to the agent."""

    outcome: str
    device: Device
    report_version: int | None
    result: ReconcileResult | None = None
    reconciliation_failed: bool = False


# System info the agent sends once per start: written only when it differs from what the device holds.
STATIC_FACTS = ("os_version", "agent_version", "ip_address")


def _facts_changes(device: Device, report: Report | RepeatedReport, now) -> dict:
    """The device fields a report changes: static facts that differ, and its metrics whole when it carries them."""
    facts = report.facts
    changes = {name: facts[name] for name in STATIC_FACTS if name in facts and facts[name] != getattr(device, name)}
    if "facts" in facts:
        changes.update(facts=facts["facts"], facts_reported_at=now)
    if changes and "uptime" in facts:
        changes["uptime"] = facts["uptime"]
    return changes


def _liveness_due(device: Device, now) -> bool:
    interval = settings.SENSORSYNC_LIVENESS_WRITE_SECONDS
    return device.last_seen_at is None or (now - device.last_seen_at).total_seconds() >= interval


def _liveness_touch(
    device: Device, *, now, report: Report | RepeatedReport | None = None, fetched_version: int | None = None
) -> bool:
    """Refresh liveness and facts without a transaction, in at most one UPDATE. Coalesced: a device seen less than
    SENSORSYNC_LIVENESS_WRITE_SECONDS ago is not written again unless it fetched a version it did not have, the
    report brings facts to keep, or it carries a clock newer than the newest seen (PERF_NOTES item 6).

    A newer clock is recorded even when the report changed nothing: an older report that arrives after it must
    be stale, not applied over the newer identical one. The real agent sends no clock, and pays nothing for it.
    Such a report is "unchanged" only if no other writer changed the device since it was read (its revision):
    False when one did (a report older by its clock may have been applied meanwhile), and the caller decides
    again under the lock."""
    changes = _facts_changes(device, report, now) if report is not None else {}
    if fetched_version is not None and fetched_version != device.last_fetched_version:
        changes.update(last_fetched_version=fetched_version, last_fetched_at=now)
    raised = _marks_raised(report, _device_marks(device)) if report is not None else {}
    if changes or raised or _liveness_due(device, now):
        changes["last_seen_at"] = now
        if report is not None and "uptime" in report.facts:  # a clock, like last_seen_at: written with it
            changes["uptime"] = report.facts["uptime"]
        if fetched_version is not None:
            changes.update(last_fetched_version=fetched_version, last_fetched_at=now)
    if changes:
        # Each mark only rises, whatever a concurrent report wrote since ``device`` was read.
        rising = {field: Greatest(Coalesce(F(field), Value(clock)), Value(clock)) for field, clock in raised.items()}
        # Only while the key the request authenticated with still holds: a late request must not undo a rotation.
        guard = {"pk": device.pk, "api_key_digest": device.api_key_digest, "is_active": True}
        if raised:
            guard["revision"] = device.revision
        if not Device.objects.filter(**guard).update(**changes, **rising):
            if raised and _access_holds(device):
                return False  # only the revision moved
            raise _access_revoked(device)
        for name, value in {**changes, **raised}.items():
            setattr(device, name, value)
    return True


def _access_holds(device: Device) -> bool:
    """Whether the key ``device`` was authenticated with still opens it."""
    return Device.objects.filter(pk=device.pk, api_key_digest=device.api_key_digest, is_active=True).exists()


def _access_revoked(device: Device) -> DeviceAccessRevoked | Device.DoesNotExist:
    """Why a write guarded by the key ``device`` was authenticated with found no row: deleted, rotated or
    deactivated since (the request was in flight)."""
    now = Device.objects.filter(pk=device.pk).values("api_key_digest", "is_active").first()
    if now is None:
        return Device.DoesNotExist(f"Device {device.uuid} was deleted.")
    if now["api_key_digest"] != device.api_key_digest:
        return DeviceAccessRevoked(401, "not_authenticated", "This key was replaced while the request was in flight.")
    return DeviceAccessRevoked(403, "device_inactive", "This device was deactivated while the request was in flight.")


def _report_marks(report: Report | RepeatedReport) -> dict[str, int]:
    """The report's clocks, by the device field holding the newest one seen (``Device.REPORT_MARKS``)."""
    return {Device.REPORT_MARKS[clock]: value for clock, value in report.clocks.items()}


def _device_marks(device: Device) -> dict[str, int | None]:
    return {field: getattr(device, field) for field in Device.REPORT_MARKS.values()}


def _is_stale(report: Report | RepeatedReport, marks: dict[str, int | None]) -> bool:
    """Older, on any clock the report carries, than the newest report seen on that clock."""
    return any(marks[field] is not None and clock < marks[field] for field, clock in _report_marks(report).items())


def _marks_raised(report: Report | RepeatedReport, marks: dict[str, int | None]) -> dict[str, int]:
    """The marks a report that is not stale raises: each clock it carries that is newer than the newest seen."""
    if _is_stale(report, marks):
        return {}
    return {
        field: clock for field, clock in _report_marks(report).items() if marks[field] is None or clock > marks[field]
    }


def target_state_fetched(*, device: Device) -> None:
    """Record that the agent now holds the current target version (answered 200 or 304)."""
    _liveness_touch(device, now=timezone.now(), fetched_version=device.target_state.version)


def _report_lock(device: Device, report: Report, now) -> tuple[Device, dict[str, int | None]]:
    """Lock the device by writing its liveness and facts; re-read its states only if another writer committed
    since ``device`` was read. The same statement returns the target fields the lookup deferred."""
    values = {**_facts_changes(device, report, now), "last_seen_at": now}
    if "uptime" in report.facts:
        values["uptime"] = report.facts["uptime"]
    locked = device_row_lock(
        where="id",
        value=device.pk,
        values=values,
        marks=_report_marks(report),
        target_fields=REPORT_DEFERRED_TARGET,
        key_digest=device.api_key_digest,
    )
    if locked is None:
        raise _access_revoked(device)
    if locked.revision != device.revision + 1:
        device = Device.objects.select_related("target_state", "current_state").get(pk=device.pk)
    else:
        for name, value in values.items():
            setattr(device, name, value)
        device.revision = locked.revision
        for name, value in locked.marks.items():
            setattr(device, name, value)
        for name, value in locked.target.items():  # what the report's lookup left out, current (see the lock)
            setattr(device.target_state, name, value)
    return device, locked.marks


def _report_effective(report: Report, previous: DeviceCurrentState | None) -> dict:
    """The stored report's new content: each part the report carries, and the previous one for each it left out.

    Only the stored parts the report leaves out and the stored report has are read (``parts`` names those; a
    report stored before parts were kept has none, and is read whole), in one query."""
    config, apps, health = report.config, report.apps, dict(report.health)
    if previous is None:
        return {"config": config or {}, "apps": apps or {}, "sensor_health": health}
    stored = previous.parts or dict.fromkeys(("config", "apps", *HEALTH_SOURCES))
    needed = []
    if config is None and "config" in stored:
        needed.append("config")
    if apps is None and "apps" in stored:
        needed.append("apps")
    if any(source in stored and source not in health for source in HEALTH_SOURCES):
        needed.append("sensor_health")
    deferred = previous.get_deferred_fields()
    if deferred.intersection(needed):
        previous.refresh_from_db(fields=[name for name in needed if name in deferred])
    if "sensor_health" in needed:
        for source, entries in previous.sensor_health.items():
            health.setdefault(source, entries)
    effective = {
        "config": config if config is not None else (previous.config if "config" in needed else {}),
        "apps": apps if apps is not None else (previous.apps if "apps" in needed else {}),
        "sensor_health": health,
    }
    if not previous.parts:
        # Stored before part digests were kept: what this report took over from it gets its digest now, or a later
        # report leaving the part out would find no trace of it.
        parts = dict(report.parts)
        parts.setdefault("config", part_digest("config", effective["config"]))
        parts.setdefault("apps", part_digest("apps", effective["apps"]))
        for source, entries in health.items():
            parts.setdefault(source, part_digest(source, entries))
        effective["parts"] = parts
        effective["digest"] = identity_digest(report.version, parts)
    return effective


def _current_state_store(
    device: Device, report: Report, effective: dict, now, *, reconcile: bool
) -> DeviceCurrentState:
    """Store the report as the device's current state; saving fires reconciliation unless ``reconcile`` is
    False (the fallback after a failed reconciliation writes through the queryset, which sends no signal)."""
    current = device.current_state_or_none()
    created = current is None
    if created:
        current = DeviceCurrentState(device=device)
    fields = {
        "parts": report.parts,
        **effective,
        "version": report.version,
        "seq": report.clocks.get("seq"),
        "reported_at": now,
    }
    fields["digest"] = effective.get("digest", report.digest) if reconcile else UNRECONCILED_DIGEST
    for name, value in fields.items():
        setattr(current, name, value)
    device.current_state = current
    if reconcile:
        current.save(force_insert=created, update_fields=None if created else list(fields))
    elif created:
        DeviceCurrentState.objects.bulk_create([current])
    else:
        DeviceCurrentState.objects.filter(pk=current.pk).update(**fields)
    return current


def _report_event(recorder, device: Device, report: Report, effective: dict, previous) -> None:
    recorder.record(
        EventTypeChoices.CURRENT_STATE_REPORTED,
        {
            "version": report.version,
            "previous_version": previous.version if previous else None,
            "running_sensors": [s["name"] for s in config_sensors(effective["config"])],
            "partial": sorted(
                part for part, absent in (("config", report.config is None), ("apps", report.apps is None)) if absent
            ),
            "digest": report.digest,
        },
        actor=f"agent:{device.uuid}",
    )


def _queued_report_record(device: Device, report: Report, now) -> ReportVerdict:
    """A report from the agent's offline queue: acknowledged so that the queue drains, recorded, never applied.

    It carries no version and was made before reports that already arrived, so it can neither change the stored
    report nor the rows. Of its facts, only system info the device has never had is kept (the agent sends it
    once per start, so after an outage a queued report may be its only copy); older metrics are not."""
    facts = {name: report.facts[name] for name in STATIC_FACTS if name in report.facts and not getattr(device, name)}
    with transaction.atomic():
        locked = device_row_lock(
            where="id", value=device.pk, values={**facts, "last_seen_at": now}, key_digest=device.api_key_digest
        )
        if locked is None:
            raise _access_revoked(device)
        with event_recording(str(device.uuid)) as recorder:
            recorder.record(
                EventTypeChoices.CURRENT_STATE_QUEUED,
                {
                    "running_sensors": None if report.sensors is None else [s["name"] for s in report.sensors],
                    "facts": {name: report.facts[name] for name in STATIC_FACTS if name in report.facts},
                    "facts_kept": sorted(facts),
                    "digest": report.digest,
                },
                actor=f"agent:{device.uuid}",
            )
    return ReportVerdict(ReportOutcome.QUEUED, device, None)


def state_report_apply(*, device: Device, report: Report | RepeatedReport) -> ReportVerdict:
    """Store an agent's report and reconcile the read model from it.

    ``device`` comes from authentication (``devices.selectors.device_for_report``), read without a lock. A report
    older than the newest one seen, and one whose identity (sensors, apps, version, health) equals the stored
    one's, only refresh liveness and facts; both are decided first without a transaction, then again under the
    device row lock, because a concurrent report may have won in between. A ``RepeatedReport`` (parsed against
    this ``device``'s stored report) is such a repeat. A queued report (no version) is recorded, never applied.

    If reconciliation raises, the whole transaction is rolled back (the sensor rows stay exactly as they were)
    and the report is stored again without reconciling, with a ``device.reconcile_failed`` event and a digest no
    report matches, so the agent's next report, or ``manage.py reconcile``, repairs the rows.
    """
    now = timezone.now()
    if report.queued:
        return _queued_report_record(device, report, now)
    current = device.current_state_or_none()
    if _is_stale(report, _device_marks(device)):
        _liveness_touch(device, now=now, report=report)
        return ReportVerdict(ReportOutcome.STALE, device, report.version)
    if isinstance(report, RepeatedReport) or (current is not None and current.digest == report.digest):
        if _liveness_touch(device, now=now, report=report):
            return ReportVerdict(ReportOutcome.UNCHANGED, device, report.version)
        # Its newer clock met another writer: the stored report may have changed since; decide under the lock.
        if isinstance(report, RepeatedReport):
            report = report.whole()

    try:
        with transaction.atomic():
            locked, marks = _report_lock(device, report, now)
            previous = locked.current_state_or_none()
            if _is_stale(report, marks):
                return ReportVerdict(ReportOutcome.STALE, locked, report.version)
            if previous is not None and previous.digest == report.digest:
                return ReportVerdict(ReportOutcome.UNCHANGED, locked, report.version)
            effective = _report_effective(report, previous)
            with event_recording(str(locked.uuid)) as recorder:
                _report_event(recorder, locked, report, effective, previous)
                current = _current_state_store(locked, report, effective, now, reconcile=True)
            return ReportVerdict(ReportOutcome.APPLIED, locked, report.version, result=current.reconciliation)
    except (DatabaseError, InterfaceError, Device.DoesNotExist, DeviceAccessRevoked):
        raise  # the database failed, or the device or its key went away: nothing was written
    except Exception as exc:
        error_id = uuid.uuid4().hex
        logger.exception("reconciliation failed device=%s error_id=%s", device.uuid, error_id)
        with device_write(uuid=device.uuid) as locked, device_events(locked) as recorder:
            if (locked.api_key_digest, locked.is_active) != (device.api_key_digest, True):
                raise _access_revoked(device) from exc
            previous = locked.current_state_or_none()
            effective = _report_effective(report, previous)
            _report_event(recorder, locked, report, effective, previous)
            _current_state_store(locked, report, effective, now, reconcile=False)
            values = {**_facts_changes(locked, report, now), "last_seen_at": now}
            values.update(_marks_raised(report, _device_marks(locked)))  # the row is locked: no race to guard
            Device.objects.filter(pk=locked.pk).update(**values)
            recorder.record(
                EventTypeChoices.DEVICE_RECONCILE_FAILED,
                {"reported_version": report.version, "error": type(exc).__name__, "error_id": error_id},
                actor=f"agent:{locked.uuid}",
            )
        return ReportVerdict(ReportOutcome.APPLIED, locked, report.version, reconciliation_failed=True)


def device_reconcile_now(*, uuid, user) -> ReconcileResult:
    """Re-run reconciliation from the stored target and current state (manual repair; the same projection)."""
    with device_write(uuid=uuid) as device:
        return device_reconcile(
            device=device, target=device.target_state, current=device.current_state_or_none(), actor=actor_label(user)
        )
