"""The tables every report writes leave free space in their pages on PostgreSQL (HOT updates), set by migrations
that undo cleanly; SQLite has no such setting and the migrations do nothing there."""

import pytest
from django.db import connection

from tests.helpers import migrate_to

TABLES = {"devices_device": 70, "devices_devicecurrentstate": 70, "sensors_devicesensor": 50}


def _fillfactors() -> dict[str, int | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [list(TABLES)])
        found = dict(cursor.fetchall())
    return {
        table: next((int(o.split("=")[1]) for o in found[table] or [] if o.startswith("fillfactor=")), None)
        for table in TABLES
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_hot_tables_have_their_fillfactor_and_the_migrations_undo_it(latest_migrations):
    assert _fillfactors() == TABLES

    migrate_to([("devices", "0009_retry_budget"), ("sensors", "0002_sensor_health_and_unreported_fields")])
    assert _fillfactors() == dict.fromkeys(TABLES)

    migrate_to(latest_migrations)
    assert _fillfactors() == TABLES
