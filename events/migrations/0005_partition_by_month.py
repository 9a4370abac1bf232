"""On PostgreSQL, the event table becomes partitioned by month of ``created_at`` (``events.partitions``), so that
retention drops whole months instead of deleting rows. SQLite keeps one table.

The rows are copied into the new table in one transaction, which holds the old table locked meanwhile: on a large
log, run it in a maintenance window. Partitioning requires ``created_at`` in the primary key and in unique
constraints on the whole table; ``id`` comes from a sequence (PostgreSQL 15 has no identity columns on partitioned
tables). The unique (aggregate, sequence) constraint becomes a unique index on each partition
(``events.partitions``), which also serves the sequence lookup. The model is the same either way, so going back
is a no-op that leaves the table partitioned.

Django's migration state still has the model's constraints as declared (they hold as declared on SQLite): a later
migration that alters ``Event``'s primary key, ``event_id`` or ``event_aggregate_sequence_unique`` must do it
with ``RunSQL`` on PostgreSQL.
"""

from datetime import UTC, datetime

from django.db import migrations

MONTHS_AHEAD = 3  # as events.partitions.MONTHS_AHEAD when this was written

COLUMNS = """
    id bigint NOT NULL,
    event_id uuid NOT NULL,
    type varchar(64) NOT NULL,
    aggregate_type varchar(32) NOT NULL,
    aggregate_id varchar(64) NOT NULL,
    sequence integer NOT NULL CONSTRAINT events_event_sequence_check CHECK (sequence >= 0),
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    correlation_id uuid NOT NULL,
    created_at timestamp with time zone NOT NULL
"""

CONSTRAINTS = [
    "ALTER TABLE events_event ADD CONSTRAINT events_event_pkey PRIMARY KEY (id, created_at)",
    "ALTER TABLE events_event ADD CONSTRAINT events_event_event_id_key UNIQUE (event_id, created_at)",
    "ALTER TABLE events_event ADD CONSTRAINT event_sequence_positive CHECK (sequence >= 1)",
    "CREATE INDEX event_type_id_idx ON events_event (type, id)",
    "CREATE INDEX event_created_at_idx ON events_event (created_at)",
    "CREATE INDEX event_correlation_idx ON events_event (correlation_id)",
]


def _next_month(start):
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def partition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'events_event'::regclass")
        if cursor.fetchone():
            return  # partitioned already (migrated back to 0004, which leaves it so, and forward again)
        # Readers and writers wait for the copy; taking the strongest lock first means none can deadlock with it
        # half-way. Waiting for one that holds it (a long dump) fails the migration, rather than queue everyone.
        cursor.execute("SET LOCAL lock_timeout = '30s'")
        cursor.execute("LOCK TABLE events_event IN ACCESS EXCLUSIVE MODE")
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute("SELECT min(created_at), max(created_at) FROM events_event")
        oldest, newest = cursor.fetchone()
        now = datetime.now(UTC)
        start = datetime((oldest or now).year, (oldest or now).month, 1, tzinfo=UTC)
        last = max(newest or now, now)
        last = datetime(last.year, last.month, 1, tzinfo=UTC)
        for _ in range(MONTHS_AHEAD):
            last = _next_month(last)
        cursor.execute(f"CREATE TABLE events_event_partitioned ({COLUMNS}) PARTITION BY RANGE (created_at)")
        cursor.execute("CREATE TABLE events_event_default PARTITION OF events_event_partitioned DEFAULT")
        while start <= last:
            end = _next_month(start)
            cursor.execute(
                f"CREATE TABLE events_event_p{start.year:04}_{start.month:02} PARTITION OF events_event_partitioned "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
            start = end
        names = "id, event_id, type, aggregate_type, aggregate_id, sequence, data, metadata, correlation_id, created_at"
        cursor.execute(f"INSERT INTO events_event_partitioned ({names}) SELECT {names} FROM events_event")
        cursor.execute("DROP TABLE events_event")
        cursor.execute("ALTER TABLE events_event_partitioned RENAME TO events_event")
        cursor.execute("CREATE SEQUENCE events_event_id_seq OWNED BY events_event.id")
        cursor.execute("ALTER TABLE events_event ALTER COLUMN id SET DEFAULT nextval('events_event_id_seq')")
        cursor.execute("SELECT setval('events_event_id_seq', COALESCE(max(id), 0) + 1, false) FROM events_event")
        for statement in CONSTRAINTS:
            cursor.execute(statement)
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = 'events_event'::regclass")
        for (name,) in cursor.fetchall():
            cursor.execute(f"CREATE UNIQUE INDEX {name}_aggregate_sequence ON {name} "
                           "(aggregate_type, aggregate_id, sequence)")


class Migration(migrations.Migration):
    dependencies = [("events", "0004_aggregate_snapshots")]

    operations = [migrations.RunPython(partition, migrations.RunPython.noop, elidable=False)]
