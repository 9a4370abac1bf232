"""Appending to the event log.

Writers record events inside ``event_recording(aggregate_id)``; the outermost scope for an aggregate flushes
them in one ``INSERT`` that numbers them after the aggregate's last sequence. The caller must hold the
aggregate's lock (the device row, ``devices.locking``) for the whole scope: that is what keeps per-aggregate
sequences gapless under concurrent writers. The unique index on (aggregate, sequence) is the backstop.

Higher layers follow the log through event sinks (``event_sink_register``): each flushed batch is handed to every
sink right after its INSERT, in the same transaction, so what a sink writes commits or rolls back with the events.
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper

from sensorsync_project.fields import concrete_field

from .context import current_context
from .models import AggregateSnapshot, Event

DEVICE_AGGREGATE = "device"

_open: contextvars.ContextVar[dict[tuple[str, str], "EventRecorder"] | None] = contextvars.ContextVar(
    "open_event_recorders", default=None
)


# Called with each flushed batch, inside the writer's transaction (``webhooks`` registers its outbox here).
EventSink = Callable[[Sequence[Event]], None]
_sinks: dict[str, EventSink] = {}


def event_sink_register(name: str, sink: EventSink) -> None:
    """Hand every batch of events a unit of work flushes to ``sink``, after their INSERT and in the same transaction
    (an app's ``AppConfig.ready`` registers; a second registration under ``name`` replaces the first).

    A sink runs on the agent's hot paths: given a batch with nothing it wants, it must return without a statement.
    What it raises aborts the writer's unit of work, events included."""
    _sinks[name] = sink


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
        """One INSERT (or a few, under the database's parameter limit); each event's sequence is the aggregate's
        current maximum, read once per statement by the database, plus the event's offset (safe because the caller
        holds the aggregate's lock)."""
        if not self.pending:
            return []
        events, self.pending = self.pending, []
        fields = _insert_fields()
        per_row = len(fields)  # each field but the sequence, and the event's offset
        per_statement = max(1, (_max_params(connection) - 4) // per_row)
        with connection.cursor() as cursor:
            for start in range(0, len(events), per_statement):
                batch = events[start : start + per_statement]
                params: list = []
                for offset, event in enumerate(batch, start=1):  # each statement counts from the then-last event
                    params += [
                        f.get_db_prep_save(getattr(event, f.attname), connection)
                        for f in fields
                        if f.attname != "sequence"
                    ]
                    params.append(offset)
                params += [self.aggregate_type, self.aggregate_id] * 2
                cursor.execute(_insert_sql(connection, len(batch)), params)
        for sink in _sinks.values():
            sink(events)
        return events  # their ``sequence`` was assigned by the database; read events back to see it


def _insert_fields() -> list:
    return [f for f in Event._meta.concrete_fields if not f.primary_key]


# PostgreSQL's protocol carries at most 65,535 parameters per statement (psycopg binds server-side); SQLite says
# its own limit (999 on some builds).
POSTGRESQL_MAX_PARAMS = 65_535


def _max_params(connection: BaseDatabaseWrapper) -> int:
    limit = connection.features.max_query_params
    return limit or (POSTGRESQL_MAX_PARAMS if connection.vendor == "postgresql" else 10_000)


_INSERT_SQL: dict[tuple[str, int], str] = {}
_INSERT_SQL_CACHED_ROWS = 64


def _insert_sql(connection: BaseDatabaseWrapper, rows: int) -> str:
    """``INSERT ... SELECT`` of ``rows`` events from a ``VALUES`` list, numbered in the statement: the aggregate's
    last sequence, read once (a one-row subquery joined to every row), plus each row's offset. The last sequence
    is the aggregate's newest event's, or its snapshot's when retention dropped every event it had. A subquery per row
    made the statement's cost grow faster than its rows (4,000 events: 4.7 s).

    Written from the model's fields, and kept per database vendor for the usual row counts: compiling the same
    INSERT through ``bulk_create`` (a subquery expression per row) cost more than the rest of recording a report."""
    key = (connection.vendor, rows)
    sql = _INSERT_SQL.get(key)
    if sql is None:
        qn = connection.ops.quote_name
        meta = Event._meta
        fields = _insert_fields()
        table = qn(meta.db_table)
        column = {
            name: qn(concrete_field(Event, name).column) for name in ("sequence", "aggregate_type", "aggregate_id")
        }
        width = len(fields)  # the fields but the sequence, then the offset: VALUES columns column1..columnN
        selected, index = [], 0
        for f in fields:
            if f.attname == "sequence":
                selected.append(f"last.n + v.column{width}")
            else:
                index += 1
                selected.append(f"v.column{index}")
        snapshot_column = {
            name: qn(concrete_field(AggregateSnapshot, name).column)
            for name in ("through_sequence", "aggregate_type", "aggregate_id")
        }
        row = "(" + ", ".join(["%s"] * width) + ")"
        sql = (
            f"INSERT INTO {table} ({', '.join(qn(f.column) for f in fields)}) "
            f"SELECT {', '.join(selected)} FROM (VALUES {', '.join([row] * rows)}) AS v CROSS JOIN "
            f"(SELECT COALESCE(MAX(bound.n), 0) AS n FROM ("
            f"SELECT MAX({column['sequence']}) AS n FROM {table} "
            f"WHERE {column['aggregate_type']} = %s AND {column['aggregate_id']} = %s "
            f"UNION ALL SELECT {snapshot_column['through_sequence']} FROM {qn(AggregateSnapshot._meta.db_table)} "
            f"WHERE {snapshot_column['aggregate_type']} = %s AND {snapshot_column['aggregate_id']} = %s"
            f") AS bound) AS last"
        )
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
