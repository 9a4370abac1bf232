"""The agent's reports: each one stored as the device's current state and handed to reconciliation.

``state_report_apply`` decides what a report is (applied, unchanged, stale or queued), refreshes liveness and
facts, stores a changed report, and sends ``reconciliation.signals.state_report_stored``: its receiver re-projects
the device's sensor rows and answers with the ``ReconcileResult`` that the verdict carries back to the agent.
"""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, InterfaceError, models, transaction
from django.utils import timezone

from devices.locking import (
    DeviceTouch,
    device_events,
    device_row_lock,
    device_row_touch,
    device_rows_touch,
    device_write,
)
from devices.models import Device, DeviceAccessRevoked, DeviceCurrentState
from devices.selectors import REPORT_DEFERRED_TARGET
from devices.target_config import config_sensors
from events.choices import EventTypeChoices
from events.services import EventRecorder, event_recording
from sensorsync_project.hot_queries import row_update

from ..agent_protocol import HEALTH_SOURCES, RepeatedReport, Report, identity_digest, part_digest
from ..signals import state_report_stored
from .projection import ReconcileResult

logger = logging.getLogger("sensorsync.reconciliation")

UNRECONCILED_DIGEST = ""  # a stored report whose reconciliation failed: no report's digest equals it


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


def _facts_changes(device: Device, report: Report | RepeatedReport, now: datetime) -> dict:
    """The device fields a report changes: static facts that differ, and its metrics whole when it carries them."""
    facts = report.facts
    changes = {name: facts[name] for name in STATIC_FACTS if name in facts and facts[name] != getattr(device, name)}
    if "facts" in facts:
        changes.update(facts=facts["facts"], facts_reported_at=now)
    if changes and "uptime" in facts:
        changes["uptime"] = facts["uptime"]
    return changes


def _liveness_due(device: Device, now: datetime) -> bool:
    interval = settings.SENSORSYNC_LIVENESS_WRITE_SECONDS
    return device.last_seen_at is None or (now - device.last_seen_at).total_seconds() >= interval


def _touch_plan(
    device: Device, *, now: datetime, report: Report | RepeatedReport | None, fetched_version: int | None = None
) -> tuple[dict, dict[str, int]]:
    """What ``_liveness_touch`` writes: the device fields (none: no write) and the report marks it raises."""
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
    return changes, raised


def _liveness_touch(
    device: Device,
    *,
    now: datetime,
    report: Report | RepeatedReport | None = None,
    fetched_version: int | None = None,
) -> bool:
    """Refresh liveness and facts without a transaction, in at most one UPDATE. Coalesced: a device seen less than
    SENSORSYNC_LIVENESS_WRITE_SECONDS ago is not written again unless it fetched a version it did not have, the
    report brings facts to keep, or it carries a clock newer than the newest seen (PERF_NOTES item 6).

    A newer clock is recorded even when the report changed nothing: an older report that arrives after it must
    be stale, not applied over the newer identical one. The real agent sends no clock, and pays nothing for it.
    Such a report is "unchanged" only if no other writer changed the device since it was read (its revision):
    False when one did (a report older by its clock may have been applied meanwhile), and the caller decides
    again under the lock."""
    changes, raised = _touch_plan(device, now=now, report=report, fetched_version=fetched_version)
    if changes:
        # Each mark only rises, whatever a concurrent report wrote since ``device`` was read; and only while the key
        # the request authenticated with still holds: a late request must not undo a rotation.
        written = device_row_touch(
            pk=device.pk,
            key_digest=device.api_key_digest,
            values=changes,
            rising=raised,
            revision=device.revision if raised else None,
        )
        if not written:
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
    return any((seen := marks[field]) is not None and clock < seen for field, clock in _report_marks(report).items())


def _marks_raised(report: Report | RepeatedReport, marks: dict[str, int | None]) -> dict[str, int]:
    """The marks a report that is not stale raises: each clock it carries that is newer than the newest seen."""
    if _is_stale(report, marks):
        return {}
    return {
        field: clock for field, clock in _report_marks(report).items() if (seen := marks[field]) is None or clock > seen
    }


def target_state_fetched(*, device: Device) -> None:
    """Record that the agent now holds the current target version (answered 200 or 304)."""
    _liveness_touch(device, now=timezone.now(), fetched_version=device.target_state.version)


def _report_lock(device: Device, report: Report, now: datetime) -> tuple[Device, dict[str, int | None]]:
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
    device: Device, report: Report, effective: dict, now: datetime, *, reconciled: bool
) -> DeviceCurrentState:
    """Store the report as the device's current state, in one INSERT or UPDATE. Its digest is the report's when
    it is to be reconciled, else one no report matches (the fallback after a failed reconciliation), so that the
    agent's next report is applied and repairs the rows."""
    current = device.current_state_or_none()
    created = current is None
    if current is None:
        current = DeviceCurrentState(device=device)
    fields = {
        "parts": report.parts,
        **effective,
        "version": report.version,
        "seq": report.clocks.get("seq"),
        "reported_at": now,
    }
    fields["digest"] = effective.get("digest", report.digest) if reconciled else UNRECONCILED_DIGEST
    for name, value in fields.items():
        setattr(current, name, value)
    device.current_state = current
    if created:
        DeviceCurrentState.objects.bulk_create([current])
    else:  # written by hand: compiling the queryset's UPDATE cost more than the statement
        row_update(DeviceCurrentState, key="pk", value=current.pk, values=fields)
    return current


def _applied_anew(report: Report, previous: DeviceCurrentState | None) -> bool:
    """Whether a report says the agent applied its target again: another version, or another running configuration
    for the same one. The agent changes what it runs only by applying a target (when the target's content changes,
    and once after each start); a report that differs only in health or apps is not an apply."""
    if previous is None or previous.version != report.version:
        return True
    return report.config is not None and report.parts.get("config") != (previous.parts or {}).get("config")


def _stored_report_reconcile(current: DeviceCurrentState, *, applied_anew: bool) -> ReconcileResult:
    """Hand the stored report to reconciliation: the receiver of ``state_report_stored``
    (``reconciliation.handlers``) re-projects the device's rows and answers with their ``ReconcileResult``.
    Exactly one receiver must answer so: a report stored and never reconciled would leave the rows behind."""
    # Any receiver may answer anything (the stubs say a str); only a ``ReconcileResult`` counts.
    answers: Sequence[tuple[object, object]] = state_report_stored.send(
        sender=DeviceCurrentState, current=current, applied_anew=applied_anew
    )
    results = [answer for _receiver, answer in answers if isinstance(answer, ReconcileResult)]
    if len(results) != 1:
        raise RuntimeError(f"state_report_stored: {len(results)} receivers reconciled the report, expected one")
    return results[0]


def _report_event(
    recorder: EventRecorder, device: Device, report: Report, effective: dict, previous: DeviceCurrentState | None
) -> None:
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


def _queued_report_record(device: Device, report: Report, now: datetime) -> ReportVerdict:
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


def repeated_reports_touch(items: list[tuple[Device, RepeatedReport]]) -> list[str | None]:
    """``state_report_apply`` for many repeated reports (their identity equals the stored report's), at most one per
    device, in at most one UPDATE per shape of write (``devices.locking.device_rows_touch``): each one's outcome
    (unchanged or stale), or None where it must go through ``state_report_apply`` after all (another writer moved
    the device since it was read, or its key or state changed: that call decides, or refuses, as for any report).

    For the MQTT ingestion worker's batches: what each report writes, and when, is what ``state_report_apply``
    would write for it alone (liveness coalesced, facts, the marks it raises, guarded by key and revision)."""
    now = timezone.now()
    outcomes: list[str | None] = []
    touches: dict[int, tuple[int, DeviceTouch]] = {}  # device pk -> (index, write)
    for index, (device, report) in enumerate(items):
        if device.pk in touches:
            raise ValueError(f"device {device.uuid} has more than one report in the batch")
        stale = _is_stale(report, _device_marks(device))
        outcomes.append(ReportOutcome.STALE if stale else ReportOutcome.UNCHANGED)
        changes, raised = _touch_plan(device, now=now, report=report)
        if changes:
            revision = device.revision if raised else None
            touches[device.pk] = (index, DeviceTouch(device.pk, device.api_key_digest, changes, raised, revision))
    written = device_rows_touch([touch for _, touch in touches.values()]) if touches else set()
    for pk, (index, touch) in touches.items():
        if pk not in written:
            outcomes[index] = None
            continue
        device = items[index][0]
        for name, value in {**touch.values, **touch.rising}.items():
            setattr(device, name, value)
    return outcomes


def state_report_apply(*, device: Device, report: Report | RepeatedReport) -> ReportVerdict:
    """Store an agent's report and have the read model reconciled from it (``state_report_stored``).

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
    if isinstance(report, Report) and report.queued:
        return _queued_report_record(device, report, now)
    current = device.current_state_or_none()
    if _is_stale(report, _device_marks(device)):
        _liveness_touch(device, now=now, report=report)
        return ReportVerdict(ReportOutcome.STALE, device, report.version)
    if isinstance(report, RepeatedReport) or (current is not None and current.digest == report.digest):
        if _liveness_touch(device, now=now, report=report):
            return ReportVerdict(ReportOutcome.UNCHANGED, device, report.version)
        # Its newer clock met another writer: the stored report may have changed since; decide under the lock.
        if isinstance(report, RepeatedReport):  # validated whole now, with the clocks it was given (MQTT's receipt)
            report = replace(report.whole(), clocks=report.clocks)

    try:
        with transaction.atomic():
            locked, marks = _report_lock(device, report, now)
            previous = locked.current_state_or_none()
            if _is_stale(report, marks):
                return ReportVerdict(ReportOutcome.STALE, locked, report.version)
            if previous is not None and previous.digest == report.digest:
                return ReportVerdict(ReportOutcome.UNCHANGED, locked, report.version)
            effective = _report_effective(report, previous)
            applied_anew = _applied_anew(report, previous)  # read before the stored report is overwritten
            with event_recording(str(locked.uuid)) as recorder:
                _report_event(recorder, locked, report, effective, previous)
                current = _current_state_store(locked, report, effective, now, reconciled=True)
                result = _stored_report_reconcile(current, applied_anew=applied_anew)
            return ReportVerdict(ReportOutcome.APPLIED, locked, report.version, result=result)
    except (DatabaseError, InterfaceError, Device.DoesNotExist, DeviceAccessRevoked):
        raise  # the database failed, or the device or its key went away: nothing was written
    except Exception as exc:
        return _unreconciled_report_store(device, report, now, exc)


def _unreconciled_report_store(device: Device, report: Report, now: datetime, exc: Exception) -> ReportVerdict:
    """After reconciliation raised (and everything was rolled back): store the report without reconciling, with
    a digest no report matches and a ``device.reconcile_failed`` event, so the next report repairs the rows."""
    error_id = uuid.uuid4().hex
    logger.exception("reconciliation failed device=%s error_id=%s", device.uuid, error_id)
    with device_write(uuid=device.uuid) as locked, device_events(locked) as recorder:
        if (locked.api_key_digest, locked.is_active) != (device.api_key_digest, True):
            raise _access_revoked(device) from exc
        previous = locked.current_state_or_none()
        effective = _report_effective(report, previous)
        _report_event(recorder, locked, report, effective, previous)
        _current_state_store(locked, report, effective, now, reconciled=False)
        values = {**_facts_changes(locked, report, now), "last_seen_at": now}
        values.update(_marks_raised(report, _device_marks(locked)))  # the row is locked: no race to guard
        Device.objects.filter(pk=locked.pk).update(**values)
        recorder.record(
            EventTypeChoices.DEVICE_RECONCILE_FAILED,
            {"reported_version": report.version, "error": type(exc).__name__, "error_id": error_id},
            actor=f"agent:{locked.uuid}",
        )
    return ReportVerdict(ReportOutcome.APPLIED, locked, report.version, reconciliation_failed=True)
