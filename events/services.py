"""Appending to the event log.

Writers record events inside ``event_recording(aggregate_id)``; the outermost scope for an aggregate flushes
them in one ``INSERT`` that numbers them after the aggregate's last sequence. The caller must hold the
aggregate's lock (the device row, ``devices.locking``) for the whole scope: that is what keeps per-aggregate
sequences gapless under concurrent writers. The unique constraint on (aggregate, sequence) is the backstop.
"""

import contextlib
import contextvars
from collections.abc import Iterator

from django.db import connection

from .context import current_context
from .models import Event

DEVICE_AGGREGATE = "device"

_open: contextvars.ContextVar[dict[tuple[str, str], "EventRecorder"] | None] = contextvars.ContextVar(
    "open_event_recorders", default=None
)


class EventRecorder:
    def __init__(self, aggregate_type: str, aggregate_id: str) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.pending: list[Event] = []

    def record(self, type: str, data: dict, *, actor: str) -> None:
        ctx = current_context()
        self.pending.append(
            Event(
                type=type,
                aggregate_type=self.aggregate_type,
                aggregate_id=self.aggregate_id,
                data=data,
                metadata=ctx.metadata(actor),
                correlation_id=ctx.correlation_id,
            )
        )

    def flush(self) -> list[Event]:
        """One INSERT; each event's sequence is the aggregate's current maximum plus its offset, computed by the
        database in the same statement (safe because the caller holds the aggregate's lock)."""
        if not self.pending:
            return []
        events, self.pending = self.pending, []
        fields = _insert_fields()
        limit = connection.features.max_query_params  # SQLite: 999 on some builds; PostgreSQL: none
        per_statement = max(1, limit // (len(fields) + 2)) if limit else len(events)
        with connection.cursor() as cursor:
            for start in range(0, len(events), per_statement):
                batch = events[start : start + per_statement]
                params: list = []
                for offset, event in enumerate(batch, start=1):  # each statement counts from the then-last event
                    for f in fields:
                        if f.attname == "sequence":
                            params += [self.aggregate_type, self.aggregate_id, offset]
                        else:
                            params.append(f.get_db_prep_save(getattr(event, f.attname), connection))
                cursor.execute(_insert_sql(connection, len(batch)), params)
        return events  # their ``sequence`` was assigned by the database; read events back to see it


def _insert_fields() -> list:
    return [f for f in Event._meta.concrete_fields if not f.primary_key]


_INSERT_SQL: dict[tuple[str, int], str] = {}
_INSERT_SQL_CACHED_ROWS = 64


def _insert_sql(connection, rows: int) -> str:
    """``INSERT ... VALUES`` of ``rows`` events, the sequence of each one computed in the statement:
    ``(SELECT COALESCE(MAX(sequence), 0) ...) + offset``. Every subquery sees the table as the statement found it,
    so the offsets number the new events after the aggregate's last one.

    Written from the model's fields, and kept per database vendor for the usual row counts: compiling the same
    INSERT through ``bulk_create`` (a subquery expression per row) cost more than the rest of recording a report."""
    key = (connection.vendor, rows)
    sql = _INSERT_SQL.get(key)
    if sql is None:
        qn = connection.ops.quote_name
        meta = Event._meta
        fields = _insert_fields()
        table = qn(meta.db_table)
        column = {name: qn(meta.get_field(name).column) for name in ("sequence", "aggregate_type", "aggregate_id")}
        sequence = (
            f"(SELECT COALESCE(MAX({column['sequence']}), 0) FROM {table} "
            f"WHERE {column['aggregate_type']} = %s AND {column['aggregate_id']} = %s) + %s"
        )
        row = "(" + ", ".join(sequence if f.attname == "sequence" else "%s" for f in fields) + ")"
        sql = f"INSERT INTO {table} ({', '.join(qn(f.column) for f in fields)}) VALUES {', '.join([row] * rows)}"
        if rows <= _INSERT_SQL_CACHED_ROWS:
            _INSERT_SQL[key] = sql
    return sql


@contextlib.contextmanager
def event_recording(aggregate_id: str, *, aggregate_type: str = DEVICE_AGGREGATE) -> Iterator[EventRecorder]:
    """Collect the events of one unit of work on one aggregate; nested scopes join the outer one."""
    key = (aggregate_type, str(aggregate_id))
    recorders = _open.get()
    if recorders is not None and key in recorders:
        yield recorders[key]
        return
    recorder = EventRecorder(*key)
    token = _open.set({**(recorders or {}), key: recorder})
    try:
        yield recorder
        recorder.flush()
    finally:
        _open.reset(token)
