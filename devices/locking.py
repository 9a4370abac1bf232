"""The unit of work on one device, shared by every service that writes to a device, its states or its sensors.

Kept apart from ``devices.services``: the reconciliation app's services (target writes, sensor edits, reports),
which write a device's states and rows, hold the same lock.
"""

import contextlib
import uuid as uuid_lib
from collections.abc import Iterator
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import Field

from events.services import EventRecorder, event_recording
from sensorsync_project.fields import concrete_field

from .models import Device, DeviceTargetState


class LockedRow(NamedTuple):
    pk: int
    revision: int
    marks: dict[str, int | None]  # the newest report clocks seen, by field (``Device.REPORT_MARKS``)
    target: dict[str, Any]  # the ``target_fields`` asked for, by name


def device_row_lock(
    *,
    where: str,
    value: Any,
    values: dict[str, Any] | None = None,
    marks: dict[str, int] | None = None,
    target_fields: tuple[str, ...] = (),
    key_digest: str | None = None,
) -> LockedRow | None:
    """Lock a device row by writing it, in one statement: ``revision + 1`` and ``values``; None if no such device.

    ``UPDATE ... RETURNING`` takes the row lock and, if it had to wait for another writer, sees that writer's
    committed row, so the returned revision tells whether anything changed since the caller last read the device.
    ``marks`` (field -> a report's clock, see ``Device.REPORT_MARKS``) raises each high-water mark to the report's
    clock unless a newer one is already stored, or the report is older on another clock; every mark comes back,
    as stored after the statement.

    ``key_digest``: lock only while the device still has this key and is active (an agent's request, which
    authenticated before it took the lock: a rotation or deactivation in between must stop it).

    ``target_fields`` come back too, read from the device's target state by the same statement. Under READ
    COMMITTED that read sees the target as of the statement's start, not after a wait for another writer: it is
    current only when the returned revision is the one the caller expected (every target write bumps the revision
    under this lock), and a caller that finds another revision must read again.
    """
    qn = connection.ops.quote_name
    revision = qn(Device._meta.get_field("revision").column)
    mark_columns = {name: qn(concrete_field(Device, name).column) for name in Device.REPORT_MARKS.values()}
    assignments = [f"{revision} = {revision} + 1"]
    params: list[Any] = []
    for name, new in (values or {}).items():
        field = concrete_field(Device, name)
        assignments.append(f"{qn(field.column)} = %s")
        params.append(field.get_db_prep_save(new, connection))
    # A report older than the newest seen on any clock it carries is stale, and raises none of them. (SET reads
    # the row as it was before the statement, whatever the order of the assignments.)
    marks = marks or {}
    fresh = " AND ".join(f"({mark_columns[name]} IS NULL OR {mark_columns[name]} <= %s)" for name in marks)
    for name, clock in marks.items():
        mark = mark_columns[name]
        assignments.append(f"{mark} = CASE WHEN {fresh} AND ({mark} IS NULL OR {mark} < %s) THEN %s ELSE {mark} END")
        params += [*marks.values(), clock, clock]
    where_field = concrete_field(Device, where)
    params.append(where_field.get_db_prep_value(where_field.to_python(value), connection))
    condition = f"{qn(where_field.column)} = %s"
    if key_digest is not None:
        digest, active = (qn(concrete_field(Device, name).column) for name in ("api_key_digest", "is_active"))
        condition += f" AND {digest} = %s AND {active} = %s"
        params += [key_digest, True]
    table = qn(Device._meta.db_table)
    returning = [qn("id"), revision, *mark_columns.values()]
    target_meta = DeviceTargetState._meta
    fields = [concrete_field(DeviceTargetState, name) for name in target_fields]
    device_column = qn(target_meta.get_field("device").column)
    returning += [
        f"(SELECT {qn(f.column)} FROM {qn(target_meta.db_table)} WHERE {device_column} = {table}.{qn('id')})"
        for f in fields
    ]
    sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {condition} RETURNING {', '.join(returning)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    stored_marks = dict(zip(mark_columns, row[2 : 2 + len(mark_columns)], strict=True))
    target = {f.name: _from_db(f, v) for f, v in zip(fields, row[2 + len(mark_columns) :], strict=True)}
    return LockedRow(row[0], row[1], stored_marks, target=target)


def _from_db(field: Field, value: Any) -> Any:
    return field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value


def device_lock(*, uuid: uuid_lib.UUID | str) -> Device:
    """The device with its target and current state, its row locked until the transaction ends.

    The lock and the read are two statements on purpose: under READ COMMITTED, a statement that waited for
    another writer re-reads only the locked row; rows joined into it would still be the ones from before the wait
    (an old target version, a current state that did not exist yet). Reading after the lock sees them committed.
    """
    locked = device_row_lock(where="uuid", value=uuid)
    if locked is None:
        raise Device.DoesNotExist(f"No device with uuid {uuid}.")
    return Device.objects.select_related("target_state", "current_state").get(pk=locked.pk)


def device_events(device: Device) -> contextlib.AbstractContextManager[EventRecorder]:
    """The event scope of a device (joins the one ``device_write`` opened)."""
    return event_recording(str(device.uuid))


@contextlib.contextmanager
def device_write(*, uuid: uuid_lib.UUID | str) -> Iterator[Device]:
    """One unit of work on a device: a transaction, the device row locked (and its revision bumped), and one event
    scope that is flushed (gapless sequences, one INSERT) when the block ends without an exception."""
    with transaction.atomic():
        device = device_lock(uuid=uuid)
        with device_events(device):
            yield device
