"""Leave free space in the pages of the tables every report writes (PostgreSQL only), so that an update can put the
row's new version in the same page: a HOT update, which writes no index entry. Most updates of these rows touch no
indexed column (liveness, facts, the stored report), so they qualify whenever the page has room. A new fillfactor
applies to pages written from now on (a VACUUM FULL or CLUSTER repacks the old ones). SQLite has no such setting."""

from django.db import migrations

FILLFACTORS = {"devices_device": 70, "devices_devicecurrentstate": 70}


def _set(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for table, fillfactor in FILLFACTORS.items():
        schema_editor.execute(f"ALTER TABLE {quote(table)} SET (fillfactor = {int(fillfactor)})")


def _reset(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for table in FILLFACTORS:
        schema_editor.execute(f"ALTER TABLE {quote(table)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("devices", "0009_retry_budget"),
    ]

    operations = [migrations.RunPython(_set, _reset, elidable=False)]
