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
from sensorsync_project.hot_queries import db_param, set_terms

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
    written, params = _assignments(values or {}, {})
    assignments = [f"{revision} = {revision} + 1", *written]
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


def _assignments(values: dict[str, Any], rising: dict[str, int]) -> tuple[list[str], list[Any]]:
    """``SET`` terms of a device write: each of ``values``, and each mark of ``rising`` raised to its clock unless a
    newer one is stored (``GREATEST(COALESCE(mark, clock), clock)``, written portably)."""
    qn = connection.ops.quote_name
    assignments, params = set_terms(Device, values, connection)
    for name, clock in rising.items():
        mark = qn(concrete_field(Device, name).column)
        assignments.append(f"{mark} = CASE WHEN {mark} IS NULL OR {mark} < %s THEN %s ELSE {mark} END")
        params += [clock, clock]
    return assignments, params


def device_row_touch(
    *,
    pk: int,
    key_digest: str,
    values: dict[str, Any],
    rising: dict[str, int] | None = None,
    revision: int | None = None,
) -> bool:
    """Write liveness, facts and marks of a device without locking it for long: one ``UPDATE`` of just these
    columns, only while the device still has ``key_digest`` and is active (and, with ``revision``, while no other
    unit of work wrote it since it was read). Whether a row was written.

    Hand-written: an agent's report refreshes liveness or facts on most requests, and compiling the same
    ``QuerySet.update()`` every time cost more than the statement itself."""
    qn = connection.ops.quote_name
    assignments, params = _assignments(values, rising or {})
    digest, active, pk_column = (
        qn(concrete_field(Device, name).column) for name in ("api_key_digest", "is_active", "id")
    )
    condition = f"{pk_column} = %s AND {digest} = %s AND {active} = %s"
    params += [pk, key_digest, True]
    if revision is not None:
        condition += f" AND {qn(concrete_field(Device, 'revision').column)} = %s"
        params.append(revision)
    sql = f"UPDATE {qn(Device._meta.db_table)} SET {', '.join(assignments)} WHERE {condition}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount > 0


class DeviceTouch(NamedTuple):
    """One device's write in ``device_rows_touch``: what ``device_row_touch`` takes, for one device."""

    pk: int
    key_digest: str
    values: dict[str, Any]
    rising: dict[str, int]
    revision: int | None


def device_rows_touch(touches: list[DeviceTouch]) -> set[int]:
    """``device_row_touch`` for many devices (at most one touch each) in one ``UPDATE ... FROM (VALUES ...)`` per
    shape (the columns written and whether the revision is guarded): the pks of the rows written.

    The MQTT ingestion worker's batches (``ingest.worker``): most of a fleet's reports change nothing but liveness,
    facts and the receipt clock, and one statement for a batch of them costs little more than one for a single
    report. Same guards per row as ``device_row_touch``; a row that fails them is left alone and not returned."""
    shapes: dict[tuple, list[DeviceTouch]] = {}
    for touch in touches:
        shape = (tuple(sorted(touch.values)), tuple(sorted(touch.rising)), touch.revision is not None)
        shapes.setdefault(shape, []).append(touch)
    written: set[int] = set()
    for (value_names, mark_names, guarded), group in shapes.items():
        written.update(_rows_touch(group, value_names, mark_names, guarded=guarded))
    return written


def _rows_touch(group: list[DeviceTouch], value_names: tuple, mark_names: tuple, *, guarded: bool) -> list[int]:
    qn = connection.ops.quote_name
    postgresql = connection.vendor == "postgresql"
    names = ["id", "api_key_digest", *(["revision"] if guarded else []), *value_names, *mark_names]
    fields = [concrete_field(Device, name) for name in names]
    # PostgreSQL types a VALUES list from its first row; a parameter there has no type of its own: cast each.
    casts = [f"::{field.db_type(connection)}" if postgresql else "" for field in fields]
    row_sql = "(" + ", ".join(f"%s{cast}" for cast in casts) + ")"
    params: list[Any] = []
    for touch in group:
        row = [touch.pk, touch.key_digest, *([touch.revision] if guarded else [])]
        row += [touch.values[name] for name in value_names] + [touch.rising[name] for name in mark_names]
        params += [db_param(field, value, connection)[1] for field, value in zip(fields, row, strict=True)]
    table = qn(Device._meta.db_table)
    columns = [f"c{index}" for index in range(len(names))]
    column_of = dict(zip(names, columns, strict=True))
    assignments = [f"{qn(concrete_field(Device, name).column)} = v.{column_of[name]}" for name in value_names]
    for name in mark_names:
        mark = f"{table}.{qn(concrete_field(Device, name).column)}"
        clock = f"v.{column_of[name]}"
        assignments.append(
            f"{qn(concrete_field(Device, name).column)} = "
            f"CASE WHEN {mark} IS NULL OR {mark} < {clock} THEN {clock} ELSE {mark} END"
        )
    condition = (
        f"{table}.{qn('id')} = v.c0 AND {table}.{qn('api_key_digest')} = v.c1 AND {table}.{qn('is_active')} = %s"
    )
    if guarded:
        condition += f" AND {table}.{qn('revision')} = v.c2"
    sql = (
        f"WITH v ({', '.join(columns)}) AS (VALUES {', '.join([row_sql] * len(group))}) "
        f"UPDATE {table} SET {', '.join(assignments)} FROM v WHERE {condition} RETURNING {table}.{qn('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, True])
        return [row[0] for row in cursor.fetchall()]


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
