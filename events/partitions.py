"""The event table's monthly partitions on PostgreSQL (SQLite keeps one table; retention deletes rows there).

Partition ``events_event_pYYYY_MM`` holds the events created in that month (UTC). A default partition catches an
event whose month has no partition yet, so a write never fails for want of one; each partition has its own unique
index on (aggregate, sequence), made here (a partition made otherwise would lack it). The migration creates the
months up to ``MONTHS_AHEAD`` ahead; then ``partitions_ensure`` (run by every ``manage.py prune_events``) creates
the months ahead and moves any event the default partition took into the partition of its month. The months'
bounds are read from the names, which only this module writes.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from sensorsync_project.fields import concrete_field

from .models import Event

# Months created ahead of the current one: ``prune_events`` can miss this many monthly runs before events fall
# into the default partition (which still takes them).
MONTHS_AHEAD = 3

_NAME = re.compile(r"_p(\d{4})_(\d{2})$")


@dataclass(frozen=True, order=True)
class Partition:
    start: datetime  # inclusive, UTC midnight on the 1st
    end: datetime  # exclusive: the next month's start
    name: str


def month_start(day: date) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def month_next(start: datetime) -> datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def _table() -> str:
    return Event._meta.db_table


def default_partition_name() -> str:
    return f"{_table()}_default"


def partition_name(start: datetime) -> str:
    return f"{_table()}_p{start.year:04}_{start.month:02}"


def is_partitioned() -> bool:
    """Whether the event table is partitioned (PostgreSQL, after the migration that partitions it)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [_table()])
        return cursor.fetchone() is not None


def partitions() -> list[Partition]:
    """The monthly partitions, oldest first (not the default one)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [_table()],
        )
        names = [name for (name,) in cursor.fetchall()]
    found = []
    for name in names:
        match = _NAME.search(name)
        if match:
            start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
            found.append(Partition(start, month_next(start), name))
    return sorted(found)


def _literal(moment: datetime) -> str:
    return f"'{moment.isoformat()}'"  # our own UTC month starts: DDL takes no bound parameters


def partition_create(start: datetime) -> str:
    """Create the partition of the month starting at ``start``, first moving the events of that month that the
    default partition took (a partition cannot be created over rows the default partition holds)."""
    qn = connection.ops.quote_name
    name, end = partition_name(start), month_next(start)
    created_at = qn(Event._meta.get_field("created_at").column)
    in_month = f"{created_at} >= {_literal(start)} AND {created_at} < {_literal(end)}"
    with transaction.atomic(), connection.cursor() as cursor:
        ddl_session(cursor)
        # No event may land in the default partition between the move and the CREATE (which checks that it holds
        # none of the month). The CREATE locks the whole log anyway: lock it first, in the order writers do (the
        # log, then a partition), or a writer waiting on the default partition deadlocks with it.
        log_lock()
        cursor.execute(
            f"CREATE TEMPORARY TABLE event_partition_moving AS WITH moved AS "
            f"(DELETE FROM {qn(default_partition_name())} WHERE {in_month} RETURNING *) SELECT * FROM moved"
        )
        cursor.execute(
            f"CREATE TABLE {qn(name)} PARTITION OF {qn(_table())} "
            f"FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
        )
        cursor.execute(partition_unique_index_sql(name))
        cursor.execute(f"INSERT INTO {qn(_table())} SELECT * FROM event_partition_moving")
        cursor.execute("DROP TABLE event_partition_moving")
    return name


def partition_unique_index_sql(name: str) -> str:
    """Sequences are unique per aggregate: a unique index on each partition (one over the whole table would have to
    include ``created_at``). It serves the sequence lookup of ``events.services`` too."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(concrete_field(Event, f).column) for f in ("aggregate_type", "aggregate_id", "sequence"))
    return f"CREATE UNIQUE INDEX {qn(name + '_aggregate_sequence')} ON {qn(name)} ({columns})"


def ddl_session(cursor: CursorWrapper) -> None:
    """For this transaction: no statement timeout (moving or copying events may take long), but give up on a lock
    that writers hold for more than a few seconds rather than queue every writer behind the wait."""
    cursor.execute("SET LOCAL statement_timeout = 0")
    cursor.execute("SET LOCAL lock_timeout = '5s'")


def partitions_ensure(*, today: date | None = None, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the partitions of this month and ``months_ahead`` more, and of every month the default partition
    holds events of; the names created."""
    qn = connection.ops.quote_name
    created_at = qn(Event._meta.get_field("created_at").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT date_trunc('month', {created_at} AT TIME ZONE 'UTC') FROM {qn(default_partition_name())}"
        )
        wanted = {datetime(m.year, m.month, 1, tzinfo=UTC) for (m,) in cursor.fetchall()}
    start = month_start(today or datetime.now(UTC).date())
    for _ in range(months_ahead + 1):
        wanted.add(start)
        start = month_next(start)
    existing = {p.start for p in partitions()}
    return [partition_create(month) for month in sorted(wanted - existing)]


def log_lock() -> None:
    """Hold off every reader and writer of the log until the transaction ends (keep that short)."""
    with connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {connection.ops.quote_name(_table())} IN ACCESS EXCLUSIVE MODE")


def partition_drop(partition: Partition) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {connection.ops.quote_name(partition.name)}")
