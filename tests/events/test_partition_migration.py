"""The migration that partitions the event log on PostgreSQL keeps every event, puts each in its month, and new
events go on numbering their ids after the copied ones."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from events import partitions
from events.models import Event
from tests.helpers import migrate_to

BEFORE = [("events", "0004_aggregate_snapshots")]
MONTHS = [datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 3, 31, 23, 59, tzinfo=UTC), datetime.now(UTC)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_existing_events_are_copied_into_their_months(latest_migrations):
    old = migrate_to(BEFORE)  # going back leaves the table partitioned: make it the plain table it was
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE events_event")
    with connection.schema_editor() as editor:
        editor.create_model(old.get_model("events", "Event"))
    OldEvent = old.get_model("events", "Event")
    aggregate = str(uuid.uuid4())
    for sequence, moment in enumerate(MONTHS, start=1):
        OldEvent.objects.create(
            type="device.updated",
            aggregate_type="device",
            aggregate_id=aggregate,
            sequence=sequence,
            data={"n": sequence},
            metadata={},
            correlation_id=uuid.uuid4(),
            created_at=moment,
        )
    before = list(OldEvent.objects.order_by("id").values_list("id", "sequence", "data", "created_at"))
    assert not partitions.is_partitioned()

    migrate_to(latest_migrations)

    assert partitions.is_partitioned()
    after = list(Event.objects.order_by("id").values_list("id", "sequence", "data", "created_at"))
    assert after == before
    for moment in MONTHS:
        name = partitions.partition_name(partitions.month_start(moment.date()))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {name} WHERE created_at = %s", [moment])
            assert cursor.fetchone()[0] == 1, name
    created = Event.objects.create(
        type="device.updated", aggregate_type="device", aggregate_id=aggregate, sequence=4, correlation_id=uuid.uuid4()
    )
    assert created.id > before[-1][0]
